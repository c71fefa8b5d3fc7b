/* The CUDA backend object: device, stream, cuBLAS handle, memory, weights and the ops
 * table; the kernels live in cuda_matmul.cu, cuda_ops.cu and cuda_attention.cu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* Every entry point makes the backend's device current for the calling thread, so a
 * backend may be driven from any thread (a tensor-parallel rank's, say), not only the
 * one that created it. */
static cuda_backend *cuda(cv_backend *be) {
    cuda_backend *cb = (cuda_backend *)be;
    CUDA_CHECK(cb, cudaSetDevice(cb->device));
    return cb;
}

/* The same for the entries that are not ops: a step being recorded runs first. */
static cuda_backend *cuda_flushed(cv_backend *be) {
    cuda_backend *cb = cuda(be);
    cv_cuda_graph_flush(cb);
    return cb;
}

int cv_cuda_fail(cuda_backend *cb, const char *file, int line, const char *call, const char *what) {
    if (!cb->failed) {
        cb->failed = 1;
        const char *base = strrchr(file, '/');
        cv_errorf(&cb->err, CV_EIO, "cuda backend (device %d): %s:%d: %s: %s", cb->device,
                  base ? base + 1 : file, line, call, what);
    }
    return 1;
}

int cv_cuda_check_rt(cuda_backend *cb, cudaError_t rc, const char *file, int line, const char *call) {
    if (rc == cudaSuccess) return 0;
    char what[256];
    snprintf(what, sizeof what, "%s (%s)", cudaGetErrorString(rc), cudaGetErrorName(rc));
    return cv_cuda_fail(cb, file, line, call, what);
}

int cv_cuda_check_blas(cuda_backend *cb, cublasStatus_t rc, const char *file, int line, const char *call) {
    if (rc == CUBLAS_STATUS_SUCCESS) return 0;
    char what[256];
    snprintf(what, sizeof what, "%s (%s)", cublasGetStatusString(rc), cublasGetStatusName(rc));
    return cv_cuda_fail(cb, file, line, call, what);
}

/* Moves the recorded failure (if any) into err and clears it. */
static cv_status take_error(cuda_backend *cb, cv_error *err) {
    if (!cb->failed) return CV_OK;
    cb->failed = 0;
    cv_status code = cb->err.code;
    if (err) *err = cb->err;
    return code;
}

extern "C" cv_status cv_cuda_device_count(int *n, cv_error *err) {
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    *n = 0;
    if (rc == cudaErrorNoDevice)
        return cv_errorf(err, CV_EUNAVAILABLE, "no CUDA device: the driver sees no GPU (cudaGetDeviceCount: %s)",
                         cudaGetErrorString(rc));
    if (rc == cudaErrorInsufficientDriver)
        return cv_errorf(err, CV_EUNAVAILABLE,
                         "no CUDA device: insufficient driver, none loaded or one older than the CUDA runtime "
                         "(cudaGetDeviceCount: %s)",
                         cudaGetErrorString(rc));
    if (rc != cudaSuccess)
        return cv_errorf(err, CV_EIO, "cudaGetDeviceCount: %s (%s)", cudaGetErrorString(rc), cudaGetErrorName(rc));
    if (count == 0) return cv_errorf(err, CV_EUNAVAILABLE, "no CUDA device (cudaGetDeviceCount: 0)");
    *n = count;
    return CV_OK;
}

/* ---- memory ---- */

static cv_status cuda_alloc(cv_backend *be, size_t bytes, void **out, cv_error *err) {
    cuda_backend *cb = cuda_flushed(be);
    *out = NULL;
    if (!bytes) return CV_OK;
    cudaError_t rc = cudaMalloc(out, bytes);
    if (rc != cudaSuccess) {
        *out = NULL;
        return cv_errorf(err, CV_ENOMEM, "cuda backend (device %d): cudaMalloc of %zu bytes: %s", cb->device, bytes,
                         cudaGetErrorString(rc));
    }
    return CV_OK;
}

static void cuda_free(cv_backend *be, void *p) {
    if (p) CUDA_CHECK(cuda_flushed(be), cudaFree(p));
}

/* Pageable host memory: the copy has left src when the call returns. */
static cv_status cuda_upload(cv_backend *be, void *dst, const void *src, size_t bytes, cv_error *err) {
    cuda_backend *cb = cuda_flushed(be);
    if (bytes) CUDA_CHECK(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->stream));
    return take_error(cb, err);
}

static cv_status cuda_download(cv_backend *be, void *dst, const void *src, size_t bytes, cv_error *err) {
    cuda_backend *cb = cuda_flushed(be);
    if (bytes) {
        CUDA_CHECK(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->stream));
        CUDA_CHECK(cb, cudaStreamSynchronize(cb->stream));
    }
    return take_error(cb, err);
}

static cv_status cuda_synchronize(cv_backend *be, cv_error *err) {
    cuda_backend *cb = cuda_flushed(be);
    CUDA_CHECK(cb, cudaStreamSynchronize(cb->stream));
    return take_error(cb, err);
}

/* ---- weights ---- */

/* Grows one of the cuBLAS staging buffers; only weight_load calls it (ops never allocate).
 * The graphs name the old buffer: they go first. */
static cv_status grow(cuda_backend *cb, void **buf, size_t *have, size_t want, cv_error *err) {
    if (want <= *have) return CV_OK;
    cv_cuda_graph_invalidate(cb);
    if (*buf) CUDA_CHECK(cb, cudaFree(*buf));
    *buf = NULL;
    *have = 0;
    cv_status s = cuda_alloc(&cb->base, want, buf, err);
    if (!s) *have = want;
    return s;
}

static cv_status cuda_weight_load(cv_backend *be, const cv_tensor *host, cv_tensor *out, cv_error *err) {
    cuda_backend *cb = cuda_flushed(be);
    const cv_type_info *ti = cv_type_get(host->type);
    if (!ti || !cv_cuda_type_ok(host->type))
        return cv_errorf(err, CV_EUNSUPPORTED, "cuda backend: weight type %s is not supported",
                         ti ? ti->name : "(unknown)");
    if (host->rows <= 0 || host->cols <= 0 || host->cols % ti->block_elems != 0)
        return cv_errorf(err, CV_EINVAL, "cuda backend: weight of %lld x %lld: cols must be a positive multiple of %u (%s)",
                         (long long)host->rows, (long long)host->cols, ti->block_elems, ti->name);
    size_t rb = cv_type_row_bytes(host->type, host->cols);
    if (host->row_stride < rb)
        return cv_errorf(err, CV_EINVAL, "cuda backend: row_stride %zu is less than the %zu bytes of a %s row of %lld",
                         host->row_stride, rb, ti->name, (long long)host->cols);
    size_t gw = cv_cuda_gemm_w_bytes(host);
    size_t gx = (size_t)cb->max_gemm_rows * (size_t)host->cols * 2;
    cv_status s;
    if ((s = grow(cb, &cb->gemm_w, &cb->gemm_w_bytes, gw, err)) ||
        (s = grow(cb, &cb->gemm_x, &cb->gemm_x_bytes, gx, err)))
        return err ? cv_error_wrap(err, "cuda backend: cuBLAS staging for a %lld x %lld weight", (long long)host->rows,
                                   (long long)host->cols)
                   : s;
    void *dev = NULL;
    if ((s = cuda_alloc(be, rb * (size_t)host->rows, &dev, err))) return s;
    CUDA_CHECK(cb, cudaMemcpy2DAsync(dev, rb, host->data, host->row_stride, rb, (size_t)host->rows,
                                     cudaMemcpyHostToDevice, cb->stream));
    if ((s = cuda_synchronize(be, err))) {
        cudaFree(dev);
        return s;
    }
    *out = *host;
    out->data = dev;
    out->row_stride = rb;
    out->device = CV_DEVICE_CUDA;
    out->layout = 0; /* rows, whatever the host asked to keep */
    return CV_OK;
}

static void cuda_weight_release(cv_backend *be, cv_tensor *t) {
    cuda_free(be, t->data);
    memset(t, 0, sizeof *t);
}

/* ---- ops: thin forwards to the launchers (cv_cuda_eager_ops) ---- */

static void op_matmul(cv_backend *be, const cv_tensor *w, const float *x, float *y, int32_t n) {
    cv_cuda_matmul((cuda_backend *)be, w, x, y, n);
}
static void op_get_rows(cv_backend *be, const cv_tensor *t, const int32_t *ids, int32_t n, float *out) {
    cv_cuda_get_rows((cuda_backend *)be, t, ids, n, out);
}
static void op_rmsnorm(cv_backend *be, const float *x, const float *w, float *y, int32_t n_rows, int32_t dim,
                       float eps, int add_one) {
    cv_cuda_rmsnorm((cuda_backend *)be, x, w, y, n_rows, dim, eps, add_one);
}
static void op_rope(cv_backend *be, const cv_rope_params *p, float *x, int32_t n_tokens, int32_t n_heads,
                    int32_t head_dim, const int32_t *pos) {
    cv_cuda_rope((cuda_backend *)be, p, x, n_tokens, n_heads, head_dim, pos);
}
static void op_softmax(cv_backend *be, float *x, int32_t n_rows, int32_t n) { cv_cuda_softmax((cuda_backend *)be, x, n_rows, n); }
static void op_glu(cv_backend *be, cv_glu_kind kind, const float *gate, const float *up, float *out, int64_t n) {
    cv_cuda_glu((cuda_backend *)be, kind, gate, up, out, n);
}
static void op_add(cv_backend *be, const float *a, const float *b, float *out, int64_t n) {
    cv_cuda_add((cuda_backend *)be, a, b, out, n);
}
static void op_scale(cv_backend *be, float *x, float s, int64_t n) { cv_cuda_scale((cuda_backend *)be, x, s, n); }
static void op_softcap(cv_backend *be, float *x, float c, int64_t n) { cv_cuda_softcap((cuda_backend *)be, x, c, n); }
static void op_add_bias(cv_backend *be, float *x, const float *bias, int32_t n_rows, int32_t n) {
    cv_cuda_add_bias((cuda_backend *)be, x, bias, n_rows, n);
}
static void op_scatter_add_rows(cv_backend *be, const float *src, const int32_t *ids, const float *w, int32_t n,
                                int32_t dim, float *dst) {
    cv_cuda_scatter_add_rows((cuda_backend *)be, src, ids, w, n, dim, dst);
}
static void op_matmul_heads(cv_backend *be, const cv_tensor *w, int32_t n_heads, const float *x, int32_t x_stride,
                            float *y, int32_t y_stride, int32_t n) {
    cv_cuda_matmul_heads((cuda_backend *)be, w, n_heads, x, x_stride, y, y_stride, n);
}
static void op_copy_rows(cv_backend *be, const float *src, int32_t src_stride, float *dst, int32_t dst_stride,
                         int32_t width, int64_t n_rows) {
    cv_cuda_copy_rows((cuda_backend *)be, src, src_stride, dst, dst_stride, width, n_rows);
}
static void op_kv_store(cv_backend *be, const cv_kv_layer *kv, const cv_attn_row *rows, int32_t n, const float *k,
                        const float *v) {
    cv_cuda_kv_store((cuda_backend *)be, kv, rows, n, k, v);
}
static void op_attention(cv_backend *be, const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *rows,
                         int32_t n, const float *q, float *out) {
    cv_cuda_attention((cuda_backend *)be, p, kv, rows, n, q, out);
}

/* An op of the backend's table: cuda_graph.cu records it or launches it. A recorded op
 * touches no device until graph_end, which makes the device current itself. */
static void cuda_sink(cv_backend *be, const cv_op *op) {
    cuda_backend *cb = (cuda_backend *)be;
    cv_cuda_graph_submit(cb->step == CUDA_STEP_RECORDING ? cb : cuda(be), op);
}

static void cuda_destroy(cv_backend *be) {
    cuda_backend *cb = (cuda_backend *)be;
    cudaSetDevice(cb->device);
    cv_cuda_graph_destroy(cb);
    if (cb->stream) cudaStreamSynchronize(cb->stream);
    cudaFree(cb->gemm_w);
    cudaFree(cb->gemm_x);
    cudaFree(cb->cublas_ws);
    if (cb->cublas) cublasDestroy(cb->cublas);
    if (cb->stream) cudaStreamDestroy(cb->stream);
    free(cb);
}

static cv_backend_ops make_eager_ops(void) {
    cv_backend_ops o;
    memset(&o, 0, sizeof o);
    o.matmul = op_matmul;
    o.get_rows = op_get_rows;
    o.rmsnorm = op_rmsnorm;
    o.rope = op_rope;
    o.softmax = op_softmax;
    o.glu = op_glu;
    o.add = op_add;
    o.scale = op_scale;
    o.softcap = op_softcap;
    o.add_bias = op_add_bias;
    o.scatter_add_rows = op_scatter_add_rows;
    o.matmul_heads = op_matmul_heads;
    o.copy_rows = op_copy_rows;
    o.kv_store = op_kv_store;
    o.attention = op_attention;
    return o;
}
const cv_backend_ops cv_cuda_eager_ops = make_eager_ops();

/* The backend's table: ops go through cuda_sink, so that a step can be recorded. */
static cv_op_defer_table make_table(void) {
    cv_op_defer_table t;
    memset(&t, 0, sizeof t);
    cv_op_defer_init(&t, cuda_sink);
    t.ops.destroy = cuda_destroy;
    t.ops.alloc = cuda_alloc;
    t.ops.free = cuda_free;
    t.ops.upload = cuda_upload;
    t.ops.download = cuda_download;
    t.ops.synchronize = cuda_synchronize;
    t.ops.weight_load = cuda_weight_load;
    t.ops.weight_release = cuda_weight_release;
    t.ops.graph_begin = cv_cuda_graph_begin;
    t.ops.graph_end = cv_cuda_graph_end;
    return t;
}
static const cv_op_defer_table cuda_table = make_table();

/* cuBLAS's recommended workspace on Hopper (4 MiB would do on older chips). */
#define CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)

extern "C" cv_status cv_cuda_backend_create(const cv_cuda_options *opt, cv_backend **out, cv_error *err) {
    static const cv_cuda_options defaults = {0, 0, 0};
    if (!opt) opt = &defaults;
    *out = NULL;
    int n = 0;
    cv_status s = cv_cuda_device_count(&n, err);
    if (s) return s;
    if (opt->device < 0 || opt->device >= n)
        return cv_errorf(err, CV_EINVAL, "cuda backend: device %d does not exist (%d device%s)", opt->device, n,
                         n == 1 ? "" : "s");
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb) return cv_errorf(err, CV_ENOMEM, "cuda backend: out of memory");
    cb->base.ops = &cuda_table.ops;
    cb->base.device = CV_DEVICE_CUDA;
    cb->base.name = "cuda";
    cb->device = opt->device;
    cb->max_gemm_rows = opt->max_gemm_rows > 0 ? opt->max_gemm_rows : 512;
    const char *env = getenv("CORVID_CUDA_GRAPHS");
    const int env_off = env && !strcmp(env, "0");
    cv_cuda_graph_init(cb, !opt->no_graphs && !env_off,
                       env_off ? "CORVID_CUDA_GRAPHS=0" : "turned off (cv_cuda_options.no_graphs)");
    /* cublasSetStream resets the workspace to cuBLAS's own pool: set ours after it. */
    CUDA_CHECK(cb, cudaSetDevice(cb->device)) ||
        CUDA_CHECK(cb, cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking)) ||
        CUDA_CHECK(cb, cudaMalloc(&cb->cublas_ws, CUBLAS_WORKSPACE_BYTES)) ||
        CUBLAS_CHECK(cb, cublasCreate(&cb->cublas)) || CUBLAS_CHECK(cb, cublasSetStream(cb->cublas, cb->stream)) ||
        CUBLAS_CHECK(cb, cublasSetWorkspace(cb->cublas, cb->cublas_ws, CUBLAS_WORKSPACE_BYTES));
    if ((s = take_error(cb, err))) {
        cuda_destroy(&cb->base);
        return s;
    }
    *out = &cb->base;
    return CV_OK;
}
