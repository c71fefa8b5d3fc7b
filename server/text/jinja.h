/* jinja: a Jinja2 interpreter for the chat templates models ship in their GGUF
 * (tokenizer.chat_template), rendering as Hugging Face's apply_chat_template does:
 * an immutable sandbox with trim_blocks and lstrip_blocks, one trailing newline of the
 * template dropped, the loopcontrols extension (break/continue), the HF globals
 * raise_exception and strftime_now, and HF's tojson (no key sorting, no HTML escaping).
 *
 * Variables come in as JSON, each marked as data (messages, tools: whatever a client
 * sent) or not (bos_token, add_generation_prompt: the model's and server's own). Every
 * byte of the output remembers whether it came from data, through concatenation,
 * slicing, split, strip, replace, tojson and the rest, and the output lists those
 * bytes as spans: cv_tok_encode_plain then never reads a control token inside them, so
 * control tokens come only from the template's own text.
 *
 * What the interpreter does not implement is refused when parsed or rendered with the
 * line and the construct named (CV_EUNSUPPORTED), never rendered another way; a
 * template error (raise_exception, a type error, undefined.attr) is CV_EINVAL with
 * the line. Parsing and rendering are bounded by cv_jinja_limits.
 */
#ifndef CV_JINJA_H
#define CV_JINJA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cv_error.h"
#include "tokenizer.h" /* cv_tok_span */

typedef struct cv_jinja cv_jinja; /* a parsed template, read-only: share it across threads */

/* src[0..len) need not be NUL-terminated. CV_EFORMAT for a syntax error,
 * CV_EUNSUPPORTED for a construct the interpreter lacks, CV_ERANGE past the
 * nesting bound (both with the line). */
cv_status cv_jinja_parse(const char *src, size_t len, cv_jinja **out, cv_error *err);
void cv_jinja_free(cv_jinja *t);

typedef struct cv_jinja_var {
    const char *name; /* NULL: json is an object, each member a variable */
    const char *json; /* the value as JSON text (NUL-terminated) */
    bool data;        /* its strings are client data: never control tokens */
} cv_jinja_var;

typedef struct cv_jinja_limits {
    size_t max_output; /* bytes of any rendered string (the output, a macro's, a set block's) */
    size_t max_memory; /* bytes of values allocated during one render */
    uint64_t max_steps;/* loop iterations + macro calls + filter items */
    int max_depth;     /* nested macro calls */
    time_t now;        /* what strftime_now formats (local time); 0: the current time */
} cv_jinja_limits;

/* 4 MiB output, 64 MiB memory, 1e6 steps, depth 32, the current time. */
cv_jinja_limits cv_jinja_default_limits(void);

typedef struct cv_jinja_out {
    char *text;         /* NUL-terminated, malloc'd */
    size_t len;
    cv_tok_span *data;  /* the bytes of text that came from data vars, sorted, disjoint */
    size_t n_data;
} cv_jinja_out;

/* Renders t with vars (names must differ; a var's JSON must parse: CV_EINVAL naming
 * it). lim NULL: the defaults. On failure *out is zeroed. */
cv_status cv_jinja_render(const cv_jinja *t, const cv_jinja_var *vars, size_t n_vars,
                          const cv_jinja_limits *lim, cv_jinja_out *out, cv_error *err);
void cv_jinja_out_free(cv_jinja_out *o);

/* Whether json is one JSON value as cv_jinja_render reads it (*why says what is
 * wrong otherwise). */
bool cv_jinja_json_valid(const char *json, const char **why);

#endif
