#include "gpu_metrics.h"

#include <dlfcn.h>
#include <stdlib.h>

/* The few NVML entry points used, declared here: nvml.h is not installed anywhere. */
typedef int nvml_return;              /* 0 = NVML_SUCCESS */
typedef struct nvml_device *nvml_device;
typedef struct { unsigned gpu, memory; } nvml_utilization;
typedef struct { unsigned long long total, free, used; } nvml_memory;

struct cv_gpu_metrics {
    void *lib;
    unsigned count;
    nvml_device dev[CV_GPU_MAX];
    nvml_return (*shutdown)(void);
    nvml_return (*utilization)(nvml_device, nvml_utilization *);
    nvml_return (*memory)(nvml_device, nvml_memory *);
};

cv_status cv_gpu_metrics_open(cv_gpu_metrics **out, cv_error *err) {
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return cv_errorf(err, CV_EUNSUPPORTED, "NVML not available (%s): no GPU metrics", dlerror());
    cv_gpu_metrics *g = calloc(1, sizeof *g);
    if (!g) {
        dlclose(lib);
        return cv_errorf(err, CV_ENOMEM, "gpu metrics: out of memory");
    }
    g->lib = lib;
    nvml_return (*init)(void) = (nvml_return(*)(void))dlsym(lib, "nvmlInit_v2");
    nvml_return (*count)(unsigned *) = (nvml_return(*)(unsigned *))dlsym(lib, "nvmlDeviceGetCount_v2");
    nvml_return (*handle)(unsigned, nvml_device *) =
        (nvml_return(*)(unsigned, nvml_device *))dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    g->shutdown = (nvml_return(*)(void))dlsym(lib, "nvmlShutdown");
    g->utilization = (nvml_return(*)(nvml_device, nvml_utilization *))dlsym(lib, "nvmlDeviceGetUtilizationRates");
    g->memory = (nvml_return(*)(nvml_device, nvml_memory *))dlsym(lib, "nvmlDeviceGetMemoryInfo");
    cv_status st = CV_OK;
    if (!init || !count || !handle || !g->shutdown || !g->utilization || !g->memory) {
        st = cv_errorf(err, CV_EUNSUPPORTED, "NVML lacks an entry point this server needs: no GPU metrics");
        goto fail;
    }
    nvml_return rc = init();
    if (rc != 0) {
        st = cv_errorf(err, CV_EUNSUPPORTED, "nvmlInit failed (NVML error %d): no GPU metrics", rc);
        goto fail;
    }
    unsigned n = 0;
    if (count(&n) != 0 || n == 0) {
        g->shutdown();
        st = cv_errorf(err, CV_EUNSUPPORTED, "NVML sees no GPU: no GPU metrics");
        goto fail;
    }
    for (unsigned i = 0; i < n && g->count < CV_GPU_MAX; i++)
        if (handle(i, &g->dev[g->count]) == 0) g->count++;
    *out = g;
    return CV_OK;
fail:
    dlclose(lib);
    free(g);
    return st;
}

void cv_gpu_metrics_close(cv_gpu_metrics *g) {
    if (!g) return;
    g->shutdown();
    dlclose(g->lib);
    free(g);
}

int cv_gpu_metrics_read(cv_gpu_metrics *g, cv_gpu_sample *out) {
    int n = 0;
    for (unsigned i = 0; i < g->count; i++) {
        nvml_utilization u;
        nvml_memory m;
        if (g->utilization(g->dev[i], &u) != 0 || g->memory(g->dev[i], &m) != 0) continue;
        out[n++] = (cv_gpu_sample){i, u.gpu / 100.0, m.used, m.total};
    }
    return n;
}
