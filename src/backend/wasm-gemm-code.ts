/**
 * The wasm functions of the GEMM (wasm-gemm.ts), hand-assembled: a register-blocked micro-kernel
 * (`tile`), the loop of micro-kernels over one packed B panel (`sliver`), the two packing routines
 * and the blocked driver (`gemm`).
 *
 * Every output element is one float32 sum in k order, whatever the blocking, the edges or the
 * caller's split: c = init; for p in 0..k: c = fl(c + fl(a[i,p]·b[p,j])), where init is 0 or c
 * (accumulate), plus bias[j] if asked — separate multiply and add (wasm SIMD has no FMA). A K
 * block ends with c stored and the next reloads it, which changes no bits; padded rows and columns
 * of a partial tile are computed and thrown away. So results do not depend on the thread count,
 * and a test can recompute them exactly with Math.fround.
 */
import { Code, F32, I32, V128 } from './wasm-asm.js';

/** Register block and cache blocking; see GEMM_SHAPE. */
export interface GemmShape {
  /** Rows of the micro-tile (broadcast values of A). */
  mr: number;
  /** Columns of the micro-tile, in f32x4 vectors. */
  nv: number;
  /** K block: depth of the packed panels. */
  kc: number;
  /** N block: columns of a packed B panel (a multiple of 4·nv). */
  nc: number;
}

/** Indices of the functions in the module (calls between them use these). */
export const GEMM_FUNCTIONS = ['gemm', 'sliver', 'tile', 'packA', 'packB'] as const;
const [SLIVER, TILE, PACK_A, PACK_B] = [1, 2, 3, 4];

export interface GemmFunctionDef {
  params: number;
  locals: { count: number; type: number }[];
  code: Code;
}

/** Bytes of scratch one thread's `gemm` uses: the packed B panel, an A sliver and an edge tile. */
export function scratchBytes(s: GemmShape): number {
  return 4 * (s.kc * s.nc + s.kc * s.mr * 4 + s.mr * 4 * s.nv);
}

/**
 * tile(ap, bp, c, ldcBytes, kc, init, bias): c[mr, nr] = init + Σ_p ap[p, :]ᵀ ⊗ bp[p, :], with
 * ap a packed sliver ([kc][mr] f32x4 splats) and bp a packed panel ([kc][nr]); init bit 1 loads c
 * (else 0), bit 2 adds bias[0..nr). The mr·nv accumulators, nv vectors of B, a row's splat and a
 * product stay in registers (V8 has 15 xmm registers to allocate on x64). A step is 2·mr·nv
 * multiplies and adds among 13 other instructions (loads, two index zero-extensions, two pointer
 * increments, V8's stack check, the loop test): issue, not the FP pipes, bounds it — relaxed
 * SIMD's f32x4 FMA (behind a flag in Node 20) measured 46 GFLOPS against 38.
 */
function tile(s: GemmShape): GemmFunctionDef {
  const { mr, nv } = s;
  const nr = 4 * nv;
  const [AP, BP, C, LDC, KC, INIT, BIAS] = [0, 1, 2, 3, 4, 5, 6];
  const [P, Q, N, CR] = [7, 8, 9, 10];
  const ACC = Array.from({ length: mr }, (_, r) => Array.from({ length: nv }, (_, v) => 11 + r * nv + v));
  const BV = Array.from({ length: nv }, (_, v) => 11 + mr * nv + v);
  const AV = 11 + mr * nv + nv;
  const c = new Code();
  const eachAcc = (f: (r: number, v: number) => void) => {
    for (let r = 0; r < mr; r++) for (let v = 0; v < nv; v++) f(r, v);
  };
  // init: 0 or c, then + bias
  eachAcc((r, v) => c.v128Zero().set(ACC[r][v]));
  c.ifElse(
    () => c.get(INIT).i32(1).and(),
    () => {
      c.get(C).set(CR);
      for (let r = 0; r < mr; r++) {
        for (let v = 0; v < nv; v++) c.get(CR).v128Load(16 * v).set(ACC[r][v]);
        if (r + 1 < mr) c.inc(CR, () => c.get(LDC));
      }
    },
  );
  c.ifElse(
    () => c.get(INIT).i32(2).and(),
    () => {
      for (let v = 0; v < nv; v++) c.get(BIAS).v128Load(16 * v).set(BV[v]);
      eachAcc((r, v) => c.get(ACC[r][v]).get(BV[v]).f32x4Add().set(ACC[r][v]));
    },
  );
  // One k a step: nv vectors of B, then each row's splat times them; P runs to N (the sliver's
  // end): one compare a step, no counter. Not unrolled: TurboFan schedules every load of a
  // straight unrolled body before its arithmetic, and at 5×8 two steps' loads and the accumulators
  // spill (seen in --print-wasm-code); an exit test after each step keeps the arithmetic in place
  // and 4×8 unrolled 2, 4 or 8 times in registers, but measured 33–34 GFLOPS against 36–37 for 4×8
  // and 38 for 5×8 as here (micro-kernel alone, one thread).
  c.get(AP).set(P).get(BP).set(Q);
  c.get(AP).get(KC).i32(16 * mr).mul().add().set(N);
  c.whileNot(
    () => c.get(P).get(N).eq(),
    () => {
      for (let v = 0; v < nv; v++) c.get(Q).v128Load(16 * v).set(BV[v]);
      for (let r = 0; r < mr; r++) {
        c.get(P).v128Load(16 * r).set(AV);
        for (let v = 0; v < nv; v++) c.get(ACC[r][v]).get(AV).get(BV[v]).f32x4Mul().f32x4Add().set(ACC[r][v]);
      }
      c.inc(P, 16 * mr).inc(Q, 4 * nr);
    },
  );
  c.get(C).set(CR);
  for (let r = 0; r < mr; r++) {
    for (let v = 0; v < nv; v++) c.get(CR).get(ACC[r][v]).v128Store(16 * v);
    if (r + 1 < mr) c.inc(CR, () => c.get(LDC));
  }
  return { params: 7, locals: [{ count: 4, type: I32 }, { count: mr * nv + nv + 1, type: V128 }], code: c };
}

/**
 * sliver(ap, bp, c, ldc, kc, nc, rows, init, bias, tileScratch): the micro-kernel over every
 * panel of a packed B block (nc columns) against one packed A sliver (rows ≤ mr of them). Partial
 * tiles go through tileScratch: the valid part of c (and bias) copied in, padding zero, the same
 * kernel, the valid part copied back — the same float operations as a full tile.
 */
function sliver(s: GemmShape): GemmFunctionDef {
  const { mr, nv } = s;
  const nr = 4 * nv;
  const [AP, BP, C, LDC, KC, NC, ROWS, INIT, BIAS, TS] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [LDCB, JP, COLS, R, J, CP, TP, BPP, V] = [10, 11, 12, 13, 14, 15, 16, 17, 18];
  const c = new Code();
  c.get(LDC).i32(2).shl().set(LDCB);
  c.get(BP).set(BPP);
  // over rows r < ROWS and columns j < COLS of the tile: CP at c[r, jp], TP at tile[r, 0]
  const validPart = (f: () => void) => {
    c.i32(0).set(R);
    c.whileNot(
      () => c.get(R).get(ROWS).geU(),
      () => {
        c.get(C).get(JP).i32(2).shl().add().get(R).get(LDCB).mul().add().set(CP);
        c.get(TS).get(R).i32(4 * nr).mul().add().set(TP);
        c.i32(0).set(J);
        c.whileNot(() => c.get(J).get(COLS).geU(), () => {
          f();
          c.inc(J, 1);
        });
        c.inc(R, 1);
      },
    );
  };
  const at = (base: number) => c.get(base).get(J).i32(2).shl().add();
  c.i32(0).set(JP);
  c.whileNot(
    () => c.get(JP).get(NC).geU(),
    () => {
      c.get(NC).get(JP).sub().set(COLS);
      c.i32(nr).get(COLS).get(COLS).i32(nr).gtU().select().set(COLS);
      c.ifElse(
        () => c.get(ROWS).i32(mr).sub().eqz().get(COLS).i32(nr).geU().and(),
        () => {
          c.get(AP).get(BPP).get(C).get(JP).i32(2).shl().add().get(LDCB).get(KC).get(INIT).get(BIAS).get(JP).i32(2).shl().add().call(TILE);
        },
        () => {
          for (let t = 0; t < mr * nv; t++) c.get(TS).v128Zero().v128Store(16 * t);
          validPart(() => {
            at(TP);
            c.get(CP).get(J).i32(2).shl().add().f32Load().f32Const(0).get(INIT).i32(1).and().select().set(V);
            c.ifElse(
              () => c.get(INIT).i32(2).and(),
              () => c.get(V).get(BIAS).get(JP).get(J).add().i32(2).shl().add().f32Load().f32Add().set(V),
            );
            c.get(V).f32Store();
          });
          c.get(AP).get(BPP).get(TS).i32(4 * nr).get(KC).i32(1).i32(0).call(TILE);
          validPart(() => {
            at(CP);
            at(TP).f32Load().f32Store();
          });
        },
      );
      c.inc(BPP, () => c.get(KC).i32(4 * nr).mul());
      c.inc(JP, nr);
    },
  );
  return { params: 10, locals: [{ count: 8, type: I32 }, { count: 1, type: F32 }], code: c };
}

/**
 * packA(src, ld, trans, kc, rows, dst): rows ≤ mr rows of op(A) from src (at op(A)[i, p]) into a
 * sliver dst[kc][mr] of f32x4 splats, padding rows zero. Broadcast here, once per sliver, the
 * micro-kernel reads A with plain vector loads, which V8 addresses with the offset folded in (a
 * load32_splat costs it an extra lea a row); the sliver (20 KiB at kc 256) still fits L1. Values
 * are read four at a time where they are contiguous — along k in a row of A as stored, along rows
 * of A transposed — and splatted by shuffles: packing is O(m·k·n/nc), a few % of the product.
 */
function packA(s: GemmShape): GemmFunctionDef {
  const { mr } = s;
  const [SRC, LD, T, KC, ROWS, DST] = [0, 1, 2, 3, 4, 5];
  const [R, S, D, K, STEP, LDB, P] = [6, 7, 8, 9, 10, 11, 12];
  const X = 13; // v128
  const ROW = Array.from({ length: mr }, (_, r) => 14 + r); // i32: byte offsets of rows 1… (as stored)
  const c = new Code();
  c.get(LD).i32(2).shl().set(LDB);
  for (let r = 1; r < mr; r++) c.get(LDB).i32(r).mul().set(ROW[r]);
  c.get(LDB).i32(4).get(T).select().set(STEP); // from one k to the next
  c.get(SRC).set(S).get(DST).set(D).get(KC).set(K); // K: k not packed yet
  c.ifElse(
    () => c.get(ROWS).i32(mr).eq(),
    () => {
      c.ifElse(
        () => c.get(T),
        () => {
          // transposed: the mr values of each k are contiguous
          c.whileNot(() => c.get(K).eqz(), () => {
            for (let r = 0; r + 4 <= mr; r += 4) {
              c.get(S).v128Load(4 * r).set(X);
              for (let l = 0; l < 4; l++) c.get(D).f32x4SplatLane(X, l).v128Store(16 * (r + l));
            }
            for (let r = mr - (mr % 4); r < mr; r++) c.get(D).get(S).f32Load(4 * r).f32x4Splat().v128Store(16 * r);
            c.inc(S, () => c.get(STEP)).inc(D, 16 * mr).inc(K, -1);
          });
        },
        () => {
          // as stored: four k at a time along each row, the rows side by side so that their
          // loads overlap (row after row, a sliver of a 1024- or 50257-wide A waited on memory 5–7
          // cycles a float; side by side 3: +5% and +10% on those whole products)
          c.whileNot(() => c.get(K).i32(4).ltU(), () => {
            for (let r = 0; r < mr; r++) {
              c.get(S);
              if (r > 0) c.get(ROW[r]).add();
              c.v128Load().set(X);
              for (let l = 0; l < 4; l++) c.get(D).f32x4SplatLane(X, l).v128Store(16 * (r + l * mr));
            }
            c.inc(S, 16).inc(D, 64 * mr).inc(K, -4);
          });
        },
      );
    },
  );
  // What is left (k % 4 as stored, or every k of a partial sliver), row by row, from k = P.
  c.get(KC).get(K).sub().set(P);
  c.i32(0).set(R);
  c.whileNot(() => c.get(R).i32(mr).geU(), () => {
    c.get(DST).get(R).i32(4).shl().add().get(P).i32(16 * mr).mul().add().set(D);
    c.get(KC).get(P).sub().set(K);
    c.ifElse(
      () => c.get(R).get(ROWS).ltU(),
      () => {
        c.get(SRC).get(R).i32(4).get(LDB).get(T).select().mul().add().get(P).get(STEP).mul().add().set(S);
        c.whileNot(() => c.get(K).eqz(), () => c.get(D).get(S).f32Load().f32x4Splat().v128Store().inc(S, () => c.get(STEP)).inc(D, 16 * mr).inc(K, -1));
      },
      () => c.whileNot(() => c.get(K).eqz(), () => c.get(D).v128Zero().v128Store().inc(D, 16 * mr).inc(K, -1)),
    );
    c.inc(R, 1);
  });
  return { params: 6, locals: [{ count: 7, type: I32 }, { count: 1, type: V128 }, { count: mr, type: I32 }], code: c };
}

/**
 * packB(src, ld, trans, kc, nc, dst): op(B)[kc, nc] from src (at op(B)[p, j]) into panels of nr
 * columns, each [kc][nr], padding columns zero. Stored as is, a panel row is contiguous (vector
 * copies); transposed, each column is (a strided scatter).
 */
function packB(s: GemmShape): GemmFunctionDef {
  const { nv } = s;
  const nr = 4 * nv;
  const [SRC, LD, T, KC, NC, DST] = [0, 1, 2, 3, 4, 5];
  const [JP, COLS, K, J, S, D, LDB, STEP, PANEL] = [6, 7, 8, 9, 10, 11, 12, 13, 14];
  const c = new Code();
  c.get(LD).i32(2).shl().set(LDB);
  c.get(DST).set(PANEL);
  const overK = (body: () => void) => {
    c.get(KC).set(K);
    c.whileNot(() => c.get(K).eqz(), () => {
      body();
      c.inc(D, 4 * nr).inc(K, -1);
    });
  };
  c.i32(0).set(JP);
  c.whileNot(
    () => c.get(JP).get(NC).geU(),
    () => {
      c.get(NC).get(JP).sub().set(COLS);
      c.ifElse(
        () => c.get(T).eqz().get(COLS).i32(nr).geU().and(),
        () => {
          c.get(SRC).get(JP).i32(2).shl().add().set(S).get(PANEL).set(D);
          overK(() => {
            for (let v = 0; v < nv; v++) c.get(D).get(S).v128Load(16 * v).v128Store(16 * v);
            c.inc(S, () => c.get(LDB));
          });
        },
        () => {
          c.i32(0).set(J);
          c.whileNot(
            () => c.get(J).i32(nr).geU(),
            () => {
              c.get(PANEL).get(J).i32(2).shl().add().set(D);
              c.ifElse(
                () => c.get(J).get(COLS).ltU(),
                () => {
                  c.get(SRC).get(JP).get(J).add().get(LDB).i32(4).get(T).select().mul().add().set(S);
                  c.i32(4).get(LDB).get(T).select().set(STEP);
                  overK(() => c.get(D).get(S).f32Load().f32Store().inc(S, () => c.get(STEP)));
                },
                () => overK(() => c.get(D).f32Const(0).f32Store()),
              );
              c.inc(J, 1);
            },
          );
        },
      );
      c.inc(PANEL, () => c.get(KC).i32(4 * nr).mul());
      c.inc(JP, nr);
    },
  );
  return { params: 6, locals: [{ count: 9, type: I32 }], code: c };
}

/**
 * gemm(a, lda, transA, b, ldb, transB, c, ldc, m, n, k, flags, bias, scratch): the whole product
 * on one thread, C[m, n] = (flags & 1 ? C : 0) + (flags & 2 ? bias : 0) + op(A)·op(B). Byte
 * offsets, leading dimensions in floats. Loops: N blocks of nc columns; K blocks of kc (at least
 * one, so that k = 0 still writes init); B block packed into scratch (sized to stay in L2); then
 * for every mr rows of A: pack the sliver (L1) and run it against the whole panel.
 */
function driver(s: GemmShape): GemmFunctionDef {
  const { mr, kc, nc } = s;
  const [A, LDA, TA, B, LDB, TB, C, LDC, M, N, K, FLAGS, BIAS, SCRATCH] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
  const [JC, NCC, PC, KCC, I, BP, AP, TS, INIT, ROWS, X] = [14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24];
  const c = new Code();
  // into = min(total - at, bound)
  const remaining = (total: number, at: number, bound: number, into: number) => {
    c.get(total).get(at).sub().set(X);
    c.i32(bound).get(X).get(X).i32(bound).gtU().select().set(into);
  };
  // byte address of op(X)[row, col]: X[row, col], or X[col, row] if transposed
  const offset = (base: number, trans: number, ld: number, row: number, col: number) =>
    c.get(base).get(col).get(ld).mul().get(row).add().get(row).get(ld).mul().get(col).add().get(trans).select().i32(2).shl().add();
  c.get(SCRATCH).set(BP);
  c.get(BP).i32(4 * kc * nc).add().set(AP);
  c.get(AP).i32(16 * kc * mr).add().set(TS);
  c.i32(0).set(JC);
  c.whileNot(
    () => c.get(JC).get(N).geU(),
    () => {
      remaining(N, JC, nc, NCC);
      c.i32(0).set(PC);
      c.loop();
      {
        remaining(K, PC, kc, KCC);
        offset(B, TB, LDB, PC, JC).get(LDB).get(TB).get(KCC).get(NCC).get(BP).call(PACK_B);
        c.get(FLAGS).i32(1).get(PC).eqz().select().set(INIT);
        c.i32(0).set(I);
        c.whileNot(
          () => c.get(I).get(M).geU(),
          () => {
            remaining(M, I, mr, ROWS);
            offset(A, TA, LDA, I, PC).get(LDA).get(TA).get(KCC).get(ROWS).get(AP).call(PACK_A);
            c.get(AP).get(BP).get(C).get(I).get(LDC).mul().get(JC).add().i32(2).shl().add();
            c.get(LDC).get(KCC).get(NCC).get(ROWS).get(INIT).get(BIAS).get(JC).i32(2).shl().add().get(TS).call(SLIVER);
            c.inc(I, mr);
          },
        );
        c.inc(PC, kc);
        c.get(PC).get(K).ltU().brIf(0);
      }
      c.end();
      c.inc(JC, nc);
    },
  );
  return { params: 14, locals: [{ count: 11, type: I32 }], code: c };
}

/** The module's functions, in GEMM_FUNCTIONS order. */
export function gemmFunctions(s: GemmShape): GemmFunctionDef[] {
  return [driver(s), sliver(s), tile(s), packA(s), packB(s)];
}
