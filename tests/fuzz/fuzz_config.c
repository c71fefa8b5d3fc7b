/* libFuzzer target: corvid-server's JSON config file (every key, type and range check). */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("config", 0);
    if (fd < 0) return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        cv_config c;
        cv_error err;
        cv_config_defaults(&c);
        if (cv_config_load_file(&c, path, &err) == CV_OK) cv_config_validate(&c, &err);
    }
    close(fd);
    return 0;
}
