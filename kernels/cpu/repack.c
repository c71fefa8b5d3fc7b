/* repack: the x16 layout (repack.h); plain C, run once per weight at load. */
#include "repack.h"

#include <string.h>

#include "quant_blocks.h"

/* Where a type's half-float fields sit in its block; the body is every other byte. */
typedef struct x16_fmt {
    size_t blk;      /* block bytes */
    size_t half_at;  /* offset of the first half field */
    size_t n_half;   /* consecutive half fields */
    int flip;        /* body bytes stored + 128 */
} x16_fmt;

static int fmt_of(cv_type t, x16_fmt *f) {
    switch (t) {
    case CV_TYPE_Q4_0: *f = (x16_fmt){sizeof(cv_block_q4_0), 0, 1, 0}; return 1;
    case CV_TYPE_Q5_0: *f = (x16_fmt){sizeof(cv_block_q5_0), 0, 1, 0}; return 1;
    case CV_TYPE_Q8_0: *f = (x16_fmt){sizeof(cv_block_q8_0), 0, 1, 1}; return 1;
    case CV_TYPE_Q4_K: *f = (x16_fmt){sizeof(cv_block_q4_K), 0, 2, 0}; return 1;
    case CV_TYPE_Q5_K: *f = (x16_fmt){sizeof(cv_block_q5_K), 0, 2, 0}; return 1;
    case CV_TYPE_Q6_K: *f = (x16_fmt){sizeof(cv_block_q6_K), offsetof(cv_block_q6_K, d), 1, 0}; return 1;
    default: return 0;
    }
}

int cv_repack_x16_supported(cv_type t) {
    x16_fmt f;
    return fmt_of(t, &f);
}

/* One block of row j (at `blk`) into or out of a group's block (at `grp`). The body is
 * contiguous (the half fields lead or trail the block), so it moves a word at a time. */
static void move_block(const x16_fmt *f, int j, uint8_t *blk, uint8_t *grp, int pack) {
    const size_t words = (f->blk - 2 * f->n_half) / 4;
    const uint32_t flip = f->flip ? 0x80808080u : 0;
    for (size_t h = 0; h < f->n_half; h++) {
        uint8_t *a = blk + f->half_at + 2 * h, *b = grp + 32 * h + 2 * (size_t)j;
        memcpy(pack ? b : a, pack ? a : b, 2);
    }
    uint8_t *body = blk + (f->half_at ? 0 : 2 * f->n_half), *wv = grp + 32 * f->n_half + 4 * (size_t)j;
    for (size_t k = 0; k < words; k++) {
        uint32_t v;
        memcpy(&v, pack ? body + 4 * k : wv + 64 * k, 4);
        v ^= flip;
        memcpy(pack ? wv + 64 * k : body + 4 * k, &v, 4);
    }
}

void cv_repack_x16(cv_type t, int64_t rows, int64_t cols, const void *src, size_t src_stride, void *dst) {
    x16_fmt f;
    if (!fmt_of(t, &f)) return;
    const size_t rb = cv_type_row_bytes(t, cols);
    const int64_t nb = (int64_t)(rb / f.blk), full = rows / 16 * 16;
    uint8_t *d = dst;
    for (int64_t g = 0; g < full; g += 16)
        for (int j = 0; j < 16; j++)
            for (int64_t b = 0; b < nb; b++)
                move_block(&f, j, (uint8_t *)src + (size_t)(g + j) * src_stride + (size_t)b * f.blk,
                           d + (size_t)g * rb + (size_t)b * 16 * f.blk, 1);
    for (int64_t r = full; r < rows; r++) memcpy(d + (size_t)r * rb, (const uint8_t *)src + (size_t)r * src_stride, rb);
}

void cv_repack_x16_row(cv_type t, int64_t rows, int64_t cols, const void *data, int64_t r, void *out) {
    x16_fmt f;
    if (!fmt_of(t, &f)) return;
    const size_t rb = cv_type_row_bytes(t, cols);
    const int64_t nb = (int64_t)(rb / f.blk), g = r / 16 * 16;
    if (r >= rows / 16 * 16) {
        memcpy(out, (const uint8_t *)data + (size_t)r * rb, rb);
        return;
    }
    for (int64_t b = 0; b < nb; b++)
        move_block(&f, (int)(r - g), (uint8_t *)out + (size_t)b * f.blk,
                   (uint8_t *)data + (size_t)g * rb + (size_t)b * 16 * f.blk, 0);
}
