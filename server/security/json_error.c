#include "json_error.h"

#include <stdio.h>
#include <string.h>

const char *cv_json_error_text(json_error_t *je) {
    if (strncmp(je->text, "unable to decode byte", 21) == 0) {
        snprintf(je->text, sizeof je->text, "invalid UTF-8");
        return je->text;
    }
    char *near = strstr(je->text, " near '");
    if (near) *near = 0;
    return je->text;
}
