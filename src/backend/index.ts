/** The compute-backend layer: callers take `tf` from `selectBackend` (see select.ts). */
export {
  BACKEND_ENV,
  BACKEND_NAMES,
  parseBackendName,
  requestsWasm,
  selectBackend,
  type BackendName,
  type ResolvedBackendName,
  type SelectedBackend,
  type Tf,
} from './select.js';
