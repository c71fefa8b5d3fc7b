/* op_tape: backend compute ops as data, for backends that record a step and replay it.
 *
 * A cv_op is one call of a compute op of the ops table (matmul .. attention) with every
 * argument by value: the fields of the structs an op takes by pointer (cv_tensor,
 * cv_kv_layer, cv_rope_params, cv_attn_params) are copied, the buffers stay pointers.
 * Two ops are the same call exactly when their bytes are equal, so a tape of ops is a
 * complete key for what a recorded step computes: replaying a recording is correct for
 * any tape equal to the recorded one, whatever the buffers hold now.
 *
 * cv_op_defer_init fills the compute entries of an ops table with functions that build
 * the cv_op of their call and hand it to the table's sink; the backend's sink records it
 * on a tape or runs it at once with cv_op_apply on a table of its eager ops.
 */
#ifndef CV_OP_TAPE_H
#define CV_OP_TAPE_H

#include <stdint.h>

#include "backend.h"

typedef enum cv_op_kind {
    CV_OP_MATMUL = 1,
    CV_OP_GET_ROWS,
    CV_OP_RMSNORM,
    CV_OP_ROPE,
    CV_OP_SOFTMAX,
    CV_OP_GLU,
    CV_OP_ADD,
    CV_OP_SCALE,
    CV_OP_SOFTCAP,
    CV_OP_ADD_BIAS,
    CV_OP_KV_STORE,
    CV_OP_ATTENTION,
    CV_OP_SCATTER_ADD_ROWS,
    CV_OP_MATMUL_HEADS,
    CV_OP_COPY_ROWS
} cv_op_kind;

/* A flat record with no padding bytes (checked in op_tape.c), so that struct copies and
 * memcmp see exactly the arguments. Which slot holds which argument is op_tape.c's
 * business: build cv_ops through an ops table from cv_op_defer_init, read them back
 * with cv_op_apply. */
typedef struct cv_op {
    int32_t kind;           /* cv_op_kind */
    int32_t i[9];           /* int arguments, then the int fields of a struct argument */
    int64_t l[3];           /* int64 count, or a tensor's rows, cols and row_stride */
    float f[8];             /* float arguments and fields */
    const void *p[6];       /* buffers, then the pointer fields of a struct argument */
} cv_op;

/* Calls the entry of `ops` that op names, on be, with op's arguments. */
void cv_op_apply(const cv_backend_ops *ops, cv_backend *be, const cv_op *op);

/* An ops table whose compute ops build cv_ops for sink. A backend using one points its
 * be->ops at `ops` (the first member), so the entries find the sink from be. */
typedef void (*cv_op_sink)(cv_backend *be, const cv_op *op);
typedef struct cv_op_defer_table {
    cv_backend_ops ops;
    cv_op_sink sink;
} cv_op_defer_table;

/* Sets the compute entries of t->ops and t->sink; the other entries are left as found. */
void cv_op_defer_init(cv_op_defer_table *t, cv_op_sink sink);

/* A growing list of ops with a running hash of their bytes, of at most CV_OP_TAPE_MAX
 * (far more than any model's step). */
#define CV_OP_TAPE_MAX (1 << 20)
typedef struct cv_op_tape {
    cv_op *ops;
    int32_t n, cap;
    uint64_t hash;
} cv_op_tape;

/* Appends op; CV_ENOMEM (tape unchanged) when it cannot grow. */
cv_status cv_op_tape_push(cv_op_tape *t, const cv_op *op, cv_error *err);
/* Empties the tape, keeping its memory. */
void cv_op_tape_clear(cv_op_tape *t);
void cv_op_tape_free(cv_op_tape *t);
/* 1 when a and b hold the same ops, byte for byte. */
int cv_op_tape_equal(const cv_op_tape *a, const cv_op_tape *b);
/* Applies every op of the tape in order. */
void cv_op_tape_apply(const cv_op_tape *t, const cv_backend_ops *ops, cv_backend *be);

#endif
