#include "chat_template.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Sources of the formats (the Jinja templates in each model's tokenizer_config.json):
 *  llama2      meta-llama/Llama-2-7b-chat-hf: system folded into the first user turn
 *              inside <<SYS>>, user turns "[INST] x [/INST]" with the whole turn
 *              stripped, assistant turns " x </s>", a BOS before every later turn.
 *  llama3      meta-llama/Meta-Llama-3-8B-Instruct: a header per message, content
 *              trimmed, <|eot_id|> after it (3.1's date preamble is not added).
 *  chatml      Qwen/Qwen2-style ChatML, content as is.
 *  qwen2       Qwen/Qwen2.5-*-Instruct: ChatML plus its default system message
 *              when the chat has none.
 *  deepseek-r1 deepseek-ai/DeepSeek-R1-Distill-*: the (last) system prompt first,
 *              then <｜User｜>/<｜Assistant｜> turns; an assistant turn drops its
 *              reasoning (everything up to the last </think>); the generation
 *              prompt opens a <think> block.
 *  gemma       google/gemma-3-*-it: no system role: its content + "\n\n" starts the
 *              first user turn; "assistant" is "model"; content trimmed.
 */

static const char *const family_names[] = {"llama2", "llama3", "chatml",
                                           "qwen2",  "deepseek-r1", "gemma"};
#define N_FAMILIES (sizeof family_names / sizeof family_names[0])

#define DS_USER "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"           /* <｜User｜> */
#define DS_ASSISTANT "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>" /* <｜Assistant｜> */
#define DS_EOS "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define QWEN_DEFAULT_SYSTEM "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

const char *cv_chat_family_name(cv_chat_family f) {
    return (unsigned)f < N_FAMILIES ? family_names[f] : "unknown";
}

cv_status cv_chat_family_from_name(const char *name, cv_chat_family *out, cv_error *err) {
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (strcmp(name, family_names[i]) == 0) {
            *out = (cv_chat_family)i;
            return CV_OK;
        }
    return cv_errorf(err, CV_EINVAL,
                     "unknown chat template '%s': use llama2, llama3, chatml, qwen2, "
                     "deepseek-r1 or gemma", name);
}

const char *cv_chat_end_of_turn(cv_chat_family f) {
    switch (f) {
    case CV_CHAT_LLAMA2: return "</s>";
    case CV_CHAT_LLAMA3: return "<|eot_id|>";
    case CV_CHAT_CHATML:
    case CV_CHAT_QWEN2: return "<|im_end|>";
    case CV_CHAT_DEEPSEEK_R1: return DS_EOS;
    case CV_CHAT_GEMMA: return "<end_of_turn>";
    }
    return "";
}

/* ---- detection ---- */

static bool has(cv_str s, const char *needle) {
    return s.ptr && memmem(s.ptr, s.len, needle, strlen(needle)) != NULL;
}

static bool has_ci(cv_str s, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; s.ptr && i + n <= s.len; i++)
        if (strncasecmp(s.ptr + i, needle, n) == 0) return true;
    return false;
}

/* Printable start of an unknown template for the error message. */
static void excerpt(cv_str s, char *buf, size_t cap) {
    size_t j = 0;
    for (size_t i = 0; i < s.len && j + 1 < cap; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        buf[j++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
    }
    buf[j] = 0;
}

static cv_status from_model(cv_str arch, cv_str name, cv_chat_family *out, cv_error *err) {
    if (has_ci(arch, "gemma")) *out = CV_CHAT_GEMMA;
    else if (has_ci(name, "deepseek") && has_ci(name, "r1")) *out = CV_CHAT_DEEPSEEK_R1;
    else if (has_ci(arch, "qwen") || has_ci(name, "qwen")) *out = CV_CHAT_CHATML; /* qwen2, qwen3, qwen3moe */
    else if (has_ci(name, "llama-3") || has_ci(name, "llama 3") || has_ci(name, "llama3"))
        *out = CV_CHAT_LLAMA3;
    else if (has_ci(name, "llama-2") || has_ci(name, "llama 2") || has_ci(name, "llama2"))
        *out = CV_CHAT_LLAMA2;
    else
        return cv_errorf(err, CV_ENOTFOUND,
                         "the model has no tokenizer.chat_template and neither its architecture "
                         "'%.*s' nor its name '%.*s' names a chat format: force one (llama2, "
                         "llama3, chatml, qwen2, deepseek-r1, gemma)",
                         (int)(arch.len > 64 ? 64 : arch.len), arch.ptr ? arch.ptr : "",
                         (int)(name.len > 64 ? 64 : name.len), name.ptr ? name.ptr : "");
    return CV_OK;
}

cv_status cv_chat_detect(cv_str tmpl, cv_str arch, cv_str name, cv_chat_family *out,
                         cv_error *err) {
    if (!tmpl.ptr || tmpl.len == 0) return from_model(arch, name, out, err);
    /* Most specific first: several of these templates mention each other's tokens
     * only in their own family, so the first hit decides. */
    if (has(tmpl, DS_USER) || has(tmpl, DS_ASSISTANT)) *out = CV_CHAT_DEEPSEEK_R1;
    else if (has(tmpl, "<|start_header_id|>")) *out = CV_CHAT_LLAMA3;
    else if (has(tmpl, "<start_of_turn>")) *out = CV_CHAT_GEMMA;
    else if (has(tmpl, "<|im_start|>"))
        *out = has(tmpl, "You are Qwen, created by Alibaba Cloud") ? CV_CHAT_QWEN2 : CV_CHAT_CHATML;
    else if (has(tmpl, "[INST]") && has(tmpl, "<<SYS>>")) *out = CV_CHAT_LLAMA2;
    else {
        char start[81];
        excerpt(tmpl, start, sizeof start);
        return cv_errorf(err, CV_EUNSUPPORTED,
                         "unrecognised tokenizer.chat_template (%llu bytes, starting \"%s\"): it "
                         "has the markers of none of llama2, llama3, chatml, qwen2, deepseek-r1, "
                         "gemma; force one of them by name",
                         (unsigned long long)tmpl.len, start);
    }
    return CV_OK;
}

/* ---- rendering ---- */

/* The prompt being built, with the spans of message content in it. */
typedef struct sb {
    char *p;
    size_t len, cap;
    cv_tok_span *spans;
    size_t n_spans, cap_spans;
    bool oom;
} sb;

static void put(sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void puts_(sb *b, const char *s) { put(b, s, strlen(s)); }

/* Message content: written like template text, and remembered as a span. */
static void put_content(sb *b, const char *s, size_t n) {
    size_t start = b->len;
    put(b, s, n);
    if (b->oom || n == 0) return;
    if (b->n_spans == b->cap_spans) {
        size_t cap = b->cap_spans ? 2 * b->cap_spans : 8;
        cv_tok_span *sp = realloc(b->spans, cap * sizeof *sp);
        if (!sp) {
            b->oom = true;
            return;
        }
        b->spans = sp;
        b->cap_spans = cap;
    }
    b->spans[b->n_spans++] = (cv_tok_span){start, n};
}

static void puts_content(sb *b, const char *s) { put_content(b, s, strlen(s)); }

/* Python's str.strip() / Jinja's trim, for ASCII whitespace. */
static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static void put_content_trimmed(sb *b, const char *s) {
    size_t n = strlen(s);
    while (n && is_ws(*s)) s++, n--;
    while (n && is_ws(s[n - 1])) n--;
    put_content(b, s, n);
}

/* Strips trailing whitespace written since offset `from`, and from the content
 * spans it ends. */
static void rtrim_from(sb *b, size_t from) {
    while (!b->oom && b->len > from && is_ws(b->p[b->len - 1])) b->p[--b->len] = 0;
    while (b->n_spans && b->spans[b->n_spans - 1].start >= b->len) b->n_spans--;
    if (b->n_spans) {
        cv_tok_span *last = &b->spans[b->n_spans - 1];
        if (last->start + last->len > b->len) last->len = b->len - last->start;
    }
}

typedef enum { SYSTEM, USER, ASSISTANT } role;

static cv_status roles_of(const cv_chat_msg *msgs, size_t n, role *roles, cv_error *err) {
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return cv_errorf(err, CV_EINVAL, "messages[%zu].%s: missing", i,
                             msgs[i].role ? "content" : "role");
        const char *tool_field = msgs[i].tool_calls ? "tool_calls" : msgs[i].tool_call_id ? "tool_call_id"
                               : msgs[i].name ? "name" : NULL;
        if (tool_field)
            return cv_errorf(err, CV_EINVAL,
                             "messages[%zu].%s: the built-in chat templates take no tool calls: use the "
                             "model's own template", i, tool_field);
        if (strcmp(msgs[i].role, "system") == 0) roles[i] = SYSTEM;
        else if (strcmp(msgs[i].role, "user") == 0) roles[i] = USER;
        else if (strcmp(msgs[i].role, "assistant") == 0) roles[i] = ASSISTANT;
        else
            return cv_errorf(err, CV_EINVAL,
                             "messages[%zu].role: '%.32s' is not a role: use system, user or assistant",
                             i, msgs[i].role);
    }
    return CV_OK;
}

/* llama2 and gemma: [system] user assistant user ... (their templates raise
 * otherwise). Returns the index of the first non-system message. */
static cv_status check_alternation(cv_chat_family f, const role *roles, size_t n, size_t *first,
                                   cv_error *err) {
    size_t start = n > 0 && roles[0] == SYSTEM ? 1 : 0;
    if (start == n)
        return cv_errorf(err, CV_EINVAL,
                         "messages: the %s template: the system message needs a user message after it",
                         cv_chat_family_name(f));
    for (size_t i = start; i < n; i++) {
        role want = (i - start) % 2 == 0 ? USER : ASSISTANT;
        if (roles[i] != want)
            return cv_errorf(err, CV_EINVAL,
                             "messages[%zu].role: the %s template needs %s here: after an optional "
                             "first system message, roles must alternate user/assistant",
                             i, cv_chat_family_name(f), want == USER ? "user" : "assistant");
    }
    *first = start;
    return CV_OK;
}

static void render_llama2(sb *b, const cv_chat_msg *m, const role *r, size_t n, size_t first) {
    for (size_t i = first; i < n; i++) {
        if (r[i] == USER) {
            if (i > first) puts_(b, "<s>");
            puts_(b, "[INST] ");
            if (first == 1 && i == 1) {
                size_t from = b->len;
                puts_(b, "<<SYS>>\n");
                puts_content(b, m[0].content);
                puts_(b, "\n<</SYS>>\n\n");
                puts_content(b, m[i].content);
                rtrim_from(b, from); /* the template strips the combined text */
            } else {
                put_content_trimmed(b, m[i].content);
            }
            puts_(b, " [/INST]");
        } else {
            puts_(b, " ");
            put_content_trimmed(b, m[i].content);
            puts_(b, " </s>");
        }
    }
}

static const char *role_name(role r) {
    return r == SYSTEM ? "system" : r == USER ? "user" : "assistant";
}

static void render_llama3(sb *b, const cv_chat_msg *m, const role *r, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        puts_(b, "<|start_header_id|>");
        puts_(b, role_name(r[i]));
        puts_(b, "<|end_header_id|>\n\n");
        put_content_trimmed(b, m[i].content);
        puts_(b, "<|eot_id|>");
    }
    if (gen) puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void chatml_turn(sb *b, const char *role_s, const char *content) {
    puts_(b, "<|im_start|>");
    puts_(b, role_s);
    puts_(b, "\n");
    puts_content(b, content);
    puts_(b, "<|im_end|>\n");
}

static void render_chatml(sb *b, const cv_chat_msg *m, const role *r, size_t n, bool gen,
                          bool qwen_default_system) {
    if (qwen_default_system && r[0] != SYSTEM) /* the template's own text, not content */
        puts_(b, "<|im_start|>system\n" QWEN_DEFAULT_SYSTEM "<|im_end|>\n");
    for (size_t i = 0; i < n; i++) chatml_turn(b, role_name(r[i]), m[i].content);
    if (gen) puts_(b, "<|im_start|>assistant\n");
}

static void render_deepseek_r1(sb *b, const cv_chat_msg *m, const role *r, size_t n, bool gen) {
    const char *system = NULL;
    for (size_t i = 0; i < n; i++)
        if (r[i] == SYSTEM) system = m[i].content; /* the template keeps the last one */
    if (system) puts_content(b, system);
    for (size_t i = 0; i < n; i++) {
        if (r[i] == USER) {
            puts_(b, DS_USER);
            puts_content(b, m[i].content);
        } else if (r[i] == ASSISTANT) {
            const char *c = m[i].content, *t;
            while ((t = strstr(c, "</think>")) != NULL) c = t + strlen("</think>");
            puts_(b, DS_ASSISTANT);
            puts_content(b, c);
            puts_(b, DS_EOS);
        }
    }
    if (gen) puts_(b, DS_ASSISTANT "<think>\n");
}

static void render_gemma(sb *b, const cv_chat_msg *m, const role *r, size_t n, size_t first,
                         bool gen) {
    for (size_t i = first; i < n; i++) {
        puts_(b, r[i] == USER ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
        if (i == first && first == 1) {
            puts_content(b, m[0].content);
            puts_(b, "\n\n");
        }
        put_content_trimmed(b, m[i].content);
        puts_(b, "<end_of_turn>\n");
    }
    if (gen) puts_(b, "<start_of_turn>model\n");
}

void cv_chat_prompt_free(cv_chat_prompt *p) {
    free(p->text);
    free(p->content);
    memset(p, 0, sizeof *p);
}

/* The checks of cv_chat_check; roles (n entries) and *first filled in. */
static cv_status check_chat(cv_chat_family f, const cv_chat_msg *msgs, size_t n, role *roles, size_t *first,
                            cv_error *err) {
    if ((unsigned)f >= N_FAMILIES)
        return cv_errorf(err, CV_EINVAL, "chat template family %d does not exist", (int)f);
    if (n == 0) return cv_errorf(err, CV_EINVAL, "messages: the chat has no messages");
    *first = 0;
    cv_status st = roles_of(msgs, n, roles, err);
    if (st == CV_OK && (f == CV_CHAT_LLAMA2 || f == CV_CHAT_GEMMA))
        st = check_alternation(f, roles, n, first, err);
    return st;
}

cv_status cv_chat_check(cv_chat_family f, const cv_chat_msg *msgs, size_t n, cv_error *err) {
    role *roles = malloc((n ? n : 1) * sizeof *roles);
    if (!roles) return cv_errorf(err, CV_ENOMEM, "roles of %zu chat messages", n);
    size_t first;
    cv_status st = check_chat(f, msgs, n, roles, &first, err);
    free(roles);
    return st;
}

cv_status cv_chat_apply(cv_chat_family f, const cv_chat_msg *msgs, size_t n,
                        bool add_generation_prompt, cv_chat_prompt *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    role *roles = malloc((n ? n : 1) * sizeof *roles);
    if (!roles) return cv_errorf(err, CV_ENOMEM, "roles of %zu chat messages", n);
    sb b = {0};
    size_t first = 0;
    cv_status st = check_chat(f, msgs, n, roles, &first, err);
    if (st != CV_OK) goto done;
    switch (f) {
    case CV_CHAT_LLAMA2: render_llama2(&b, msgs, roles, n, first); break;
    case CV_CHAT_LLAMA3: render_llama3(&b, msgs, roles, n, add_generation_prompt); break;
    case CV_CHAT_CHATML:
    case CV_CHAT_QWEN2:
        render_chatml(&b, msgs, roles, n, add_generation_prompt, f == CV_CHAT_QWEN2);
        break;
    case CV_CHAT_DEEPSEEK_R1: render_deepseek_r1(&b, msgs, roles, n, add_generation_prompt); break;
    case CV_CHAT_GEMMA: render_gemma(&b, msgs, roles, n, first, add_generation_prompt); break;
    }
    put(&b, "", 0); /* an empty prompt is still a string */
    if (b.oom) {
        st = cv_errorf(err, CV_ENOMEM, "building a %s prompt from %zu messages",
                       cv_chat_family_name(f), n);
        goto done;
    }
    *out = (cv_chat_prompt){b.p, b.len, b.spans, b.n_spans};
    b.p = NULL;
    b.spans = NULL;
done:
    free(b.p);
    free(b.spans);
    free(roles);
    return st;
}

cv_status cv_chat_prompt_encode(const cv_tok *tok, const cv_chat_prompt *p, unsigned flags, int32_t **ids,
                                size_t *n_ids, cv_error *err) {
    *n_ids = 0;
    size_t cap = CV_TOK_MAX_IDS(p->len);
    if (!(*ids = malloc(cap * sizeof **ids)))
        return cv_errorf(err, CV_ENOMEM, "out of memory for the ids of a %zu-byte prompt", p->len);
    cv_status st = cv_tok_encode_plain(tok, p->text, p->len, flags | CV_TOK_PARSE_SPECIAL, p->content,
                                       p->n_content, *ids, cap, n_ids, err);
    if (st != CV_OK) {
        free(*ids);
        *ids = NULL;
        *n_ids = 0;
    }
    return st;
}

cv_status cv_chat_encode(const cv_tok *tok, cv_chat_family f, const cv_chat_msg *msgs, size_t n,
                         unsigned flags, int32_t **ids, size_t *n_ids, cv_error *err) {
    *ids = NULL;
    *n_ids = 0;
    cv_chat_prompt p;
    cv_status st = cv_chat_apply(f, msgs, n, true, &p, err);
    if (st != CV_OK) return st;
    st = cv_chat_prompt_encode(tok, &p, flags, ids, n_ids, err);
    cv_chat_prompt_free(&p);
    return st;
}
