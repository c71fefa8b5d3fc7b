#include "chat_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja.h"
#include "tool_calls.h"

struct cv_chat_format {
    cv_chat_family family;
    cv_jinja *jinja;       /* the file's template; NULL for a built-in family */
    char *bos, *eos;       /* the special tokens' text as the template sees them (JSON strings) */
    size_t bos_len;        /* of the raw text: what is cut from the front when strip_bos */
    char *bos_raw;
    bool strip_bos;        /* the tokenizer adds BOS itself */
    cv_tool_syntax tools;  /* how the template writes tool calls */
    unsigned tool_forms;   /* which forms of it (CV_TOOL_FORM_*) */
};

static const cv_chat_format families[] = {
    {.family = CV_CHAT_LLAMA2}, {.family = CV_CHAT_LLAMA3}, {.family = CV_CHAT_CHATML},
    {.family = CV_CHAT_QWEN2},  {.family = CV_CHAT_DEEPSEEK_R1}, {.family = CV_CHAT_GEMMA},
};

const cv_chat_format *cv_chat_format_family(cv_chat_family f) {
    return (unsigned)f < sizeof families / sizeof *families ? &families[f] : NULL;
}

const char *cv_chat_format_name(const cv_chat_format *f) {
    return f->jinja ? "jinja" : cv_chat_family_name(f->family);
}

cv_tool_syntax cv_chat_format_tool_syntax(const cv_chat_format *f) { return f->tools; }
unsigned cv_chat_format_tool_forms(const cv_chat_format *f) { return f->tool_forms; }

void cv_chat_format_free(cv_chat_format *f) {
    if (!f || !f->jinja) return; /* built-ins are static */
    cv_jinja_free(f->jinja);
    free(f->bos);
    free(f->eos);
    free(f->bos_raw);
    free(f);
}

/* ---- JSON text built from the request (into an open_memstream) ---- */

/* s as a JSON string; its bytes are not checked as UTF-8 (the interpreter reads them
 * as they are). */
static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void json_field(FILE *f, const char *key, const char *s) {
    fprintf(f, ",\"%s\":", key);
    json_str(f, s, strlen(s));
}

/* messages as the HF list of dicts: role, content, and the tool fields given;
 * *out malloc'd. */
static cv_status messages_json(const cv_chat_msg *m, size_t n, char **out, cv_error *err) {
    size_t len;
    FILE *f = open_memstream(out, &len);
    if (!f) return cv_errorf(err, CV_ENOMEM, "out of memory for %zu messages", n);
    cv_status st = CV_OK;
    fputc('[', f);
    for (size_t i = 0; i < n && st == CV_OK; i++) {
        if (!m[i].role || !m[i].content) {
            st = cv_errorf(err, CV_EINVAL, "messages[%zu].%s: missing", i, m[i].role ? "content" : "role");
            break;
        }
        fputs(i ? ",{\"role\":" : "{\"role\":", f);
        json_str(f, m[i].role, strlen(m[i].role));
        json_field(f, "content", m[i].content);
        if (m[i].tool_calls) {
            const char *why = "";
            if (!cv_jinja_json_valid(m[i].tool_calls, &why))
                st = cv_errorf(err, CV_EINVAL, "messages[%zu].tool_calls: not JSON: %s", i, why);
            fprintf(f, ",\"tool_calls\":%s", m[i].tool_calls);
        }
        if (m[i].tool_call_id) json_field(f, "tool_call_id", m[i].tool_call_id);
        if (m[i].name) json_field(f, "name", m[i].name);
        fputc('}', f);
    }
    fputc(']', f);
    if (fclose(f) != 0 && st == CV_OK) st = cv_errorf(err, CV_ENOMEM, "out of memory for %zu messages", n);
    if (st != CV_OK) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* ---- loading ---- */

/* A special token's text, raw and as a JSON string ("" when the model has none). */
static cv_status token_text(const cv_tok *tok, int32_t id, char **raw, size_t *raw_len, char **json) {
    const char *p = "";
    size_t n = 0, len;
    if (id >= 0 && cv_tok_piece(tok, id, CV_TOK_RENDER_SPECIAL, &p, &n, NULL) != CV_OK) n = 0;
    FILE *f = open_memstream(json, &len);
    if (!f) return CV_ENOMEM;
    json_str(f, p, n);
    if (fclose(f) != 0) return CV_ENOMEM;
    if (raw) {
        if (!(*raw = malloc(n + 1))) return CV_ENOMEM;
        memcpy(*raw, p, n);
        (*raw)[n] = 0;
        *raw_len = n;
    }
    return CV_OK;
}

cv_status cv_chat_format_load(const cv_gguf *g, const cv_tok *tok, cv_chat_format **out, char *note,
                              size_t note_cap, cv_error *err) {
    *out = NULL;
    if (note && note_cap) note[0] = 0;
    cv_str tmpl = cv_gguf_get_str(g, "tokenizer.chat_template");
    cv_str arch = cv_gguf_get_str(g, "general.architecture"), name = cv_gguf_get_str(g, "general.name");
    cv_chat_family fam;
    if (!tmpl.ptr || tmpl.len == 0) {
        cv_status st = cv_chat_detect(tmpl, arch, name, &fam, err);
        if (st == CV_OK) *out = (cv_chat_format *)cv_chat_format_family(fam);
        return st;
    }
    cv_chat_format *f = calloc(1, sizeof *f);
    if (!f) return cv_errorf(err, CV_ENOMEM, "out of memory for the chat template");
    cv_error perr = {0};
    cv_status st = cv_jinja_parse(tmpl.ptr, tmpl.len, &f->jinja, &perr);
    if (st != CV_OK) {
        free(f);
        /* the built-in family the markers name, if any, rather than no chat at all */
        if (st != CV_ENOMEM && cv_chat_detect(tmpl, arch, name, &fam, NULL) == CV_OK) {
            if (note) snprintf(note, note_cap, "tokenizer.chat_template refused (%s): using the built-in %s template",
                               perr.msg, cv_chat_family_name(fam));
            *out = (cv_chat_format *)cv_chat_format_family(fam);
            return CV_OK;
        }
        if (err) *err = perr;
        return cv_error_wrap(err, "tokenizer.chat_template");
    }
    f->strip_bos = cv_tok_adds_bos(tok);
    f->tools = cv_tool_syntax_of_template(tmpl.ptr, tmpl.len);
    f->tool_forms = cv_tool_forms_of_template(tmpl.ptr, tmpl.len);
    if (token_text(tok, cv_tok_bos(tok), &f->bos_raw, &f->bos_len, &f->bos) != CV_OK ||
        token_text(tok, cv_tok_eos(tok), NULL, NULL, &f->eos) != CV_OK) {
        cv_chat_format_free(f);
        return cv_errorf(err, CV_ENOMEM, "out of memory for the chat template");
    }
    *out = f;
    return CV_OK;
}

/* ---- rendering ---- */

static cv_status apply_jinja(const cv_chat_format *f, const cv_chat_msg *msgs, size_t n, const cv_chat_opts *o,
                             cv_chat_prompt *out, cv_error *err) {
    char *mj = NULL;
    cv_status st = messages_json(msgs, n, &mj, err);
    if (st != CV_OK) return st;
    const char *why = "";
    if (o->tools && !cv_jinja_json_valid(o->tools, &why)) {
        free(mj);
        return cv_errorf(err, CV_EINVAL, "tools: not JSON: %s", why);
    }
    cv_jinja_var vars[8] = {
        {"messages", mj, true},
        {"tools", o->tools ? o->tools : "null", o->tools != NULL},
        {"documents", "null", false},
        {"add_generation_prompt", o->add_generation_prompt ? "true" : "false", false},
        {"bos_token", f->bos, false},
        {"eos_token", f->eos, false},
    };
    size_t nv = 6;
    if (o->extra) vars[nv++] = (cv_jinja_var){NULL, o->extra, false};
    cv_jinja_out r;
    st = cv_jinja_render(f->jinja, vars, nv, NULL, &r, err);
    free(mj);
    if (st != CV_OK) return st;
    /* the tokenizer adds BOS: the template's leading one goes */
    size_t cut = f->strip_bos && f->bos_len && r.len >= f->bos_len && memcmp(r.text, f->bos_raw, f->bos_len) == 0 &&
                 (r.n_data == 0 || r.data[0].start >= f->bos_len) ? f->bos_len : 0;
    if (cut) {
        memmove(r.text, r.text + cut, r.len - cut + 1);
        r.len -= cut;
        for (size_t i = 0; i < r.n_data; i++) r.data[i].start -= cut;
    }
    *out = (cv_chat_prompt){r.text, r.len, r.data, r.n_data};
    return CV_OK;
}

cv_status cv_chat_format_apply(const cv_chat_format *f, const cv_chat_msg *msgs, size_t n,
                               const cv_chat_opts *o, cv_chat_prompt *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    if (f->jinja) return apply_jinja(f, msgs, n, o, out, err);
    if (o->tools)
        return cv_errorf(err, CV_EINVAL, "tools: the built-in %s template takes no tools: use the model's own template",
                         cv_chat_family_name(f->family));
    if (o->extra)
        return cv_errorf(err, CV_EINVAL, "the built-in %s template takes no extra template variables",
                         cv_chat_family_name(f->family));
    return cv_chat_apply(f->family, msgs, n, o->add_generation_prompt, out, err);
}

cv_status cv_chat_format_check(const cv_chat_format *f, const cv_chat_msg *msgs, size_t n,
                               const cv_chat_opts *o, cv_error *err) {
    const char *why = "";
    if (!f->jinja) {
        if (o->tools || o->extra) {
            cv_chat_prompt p; /* the refusal itself */
            return cv_chat_format_apply(f, msgs, n, o, &p, err);
        }
        return cv_chat_check(f->family, msgs, n, err);
    }
    /* the fields only: the template's own checks run when it renders */
    if (n == 0) return cv_errorf(err, CV_EINVAL, "messages: the chat has no messages");
    if (o->tools && !cv_jinja_json_valid(o->tools, &why)) return cv_errorf(err, CV_EINVAL, "tools: not JSON: %s", why);
    char *mj = NULL;
    cv_status st = messages_json(msgs, n, &mj, err);
    free(mj);
    return st;
}

cv_status cv_chat_format_encode(const cv_tok *tok, const cv_chat_format *f, const cv_chat_msg *msgs,
                                size_t n, const cv_chat_opts *o, unsigned flags, int32_t **ids,
                                size_t *n_ids, cv_error *err) {
    *ids = NULL;
    *n_ids = 0;
    cv_chat_prompt p;
    cv_status st = cv_chat_format_apply(f, msgs, n, o, &p, err);
    if (st != CV_OK) return st;
    st = cv_chat_prompt_encode(tok, &p, flags, ids, n_ids, err);
    cv_chat_prompt_free(&p);
    return st;
}
