/* libFuzzer target for chat templates: the template text comes from a GGUF file and
 * the messages from clients, both untrusted.
 * Input: template \0 architecture \0 name \0 then messages as (role byte, content \0).
 * Checks: detection never reads outside its strings; every family renders or
 * refuses without memory errors; the content spans are sorted, disjoint, inside the
 * prompt and each lies within one message's text (ChatML: exactly each message);
 * ChatML and Qwen2 prompts tokenized by cv_chat_encode hold exactly the template's
 * <|im_start|> and <|im_end|> tokens, whatever the messages say. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "gguf.h"
#include "tokenizer.h"
#include "../support/test_vocab.h"

#define MAX_MSGS 16
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s\n", #c); __builtin_trap(); } } while (0)

enum { ID_IM_START = CV_TEST_IM_START, ID_IM_END = CV_TEST_IM_END };

static cv_tok *chatml_tokenizer(void) {
    static cv_tok *t;
    if (t) return t;
    cv_error e;
    uint8_t *buf;
    size_t len;
    cv_gguf *g;
    CHECK(cv_test_chatml_gguf(NULL, &buf, &len));
    CHECK(cv_gguf_open_memory(buf, len, &g, &e) == CV_OK);
    CHECK(cv_tok_load(g, &t, &e) == CV_OK);
    cv_gguf_close(g);
    free(buf);
    return t;
}

static const char *next_field(const uint8_t **p, const uint8_t *end, size_t *len) {
    const uint8_t *start = *p, *z = memchr(start, 0, (size_t)(end - start));
    if (!z) z = end;
    *len = (size_t)(z - start);
    *p = z < end ? z + 1 : end;
    return (const char *)start;
}

static void check_spans(const cv_chat_prompt *pr, const cv_chat_msg *msgs, size_t n, int exact) {
    CHECK(strlen(pr->text) == pr->len);
    size_t end = 0, m = 0;
    for (size_t i = 0; i < pr->n_content; i++) {
        cv_tok_span s = pr->content[i];
        CHECK(s.len > 0 && s.start >= end && s.start + s.len <= pr->len);
        end = s.start + s.len;
        if (exact) {
            while (m < n && !msgs[m].content[0]) m++; /* empty content leaves no span */
            CHECK(m < n && strlen(msgs[m].content) == s.len);
            CHECK(memcmp(pr->text + s.start, msgs[m].content, s.len) == 0);
            m++;
            continue;
        }
        int found = 0;
        for (size_t k = 0; k < n && !found; k++)
            found = memmem(msgs[k].content, strlen(msgs[k].content), pr->text + s.start, s.len) != NULL;
        CHECK(found);
    }
}

/* cv_chat_encode on ChatML: one <|im_start|> per turn (the Qwen2 default system turn
 * and the generation prompt included), one <|im_end|> per closed turn. */
static void check_chatml_ids(cv_chat_family f, const cv_chat_msg *msgs, size_t n) {
    int32_t *ids;
    size_t n_ids;
    cv_error e;
    if (cv_chat_encode(chatml_tokenizer(), f, msgs, n, CV_TOK_ADD_SPECIAL, &ids, &n_ids, &e) != CV_OK) {
        CHECK(ids == NULL);
        return;
    }
    size_t turns = n + (f == CV_CHAT_QWEN2 && strcmp(msgs[0].role, "system") != 0), starts = 0, ends = 0;
    for (size_t i = 0; i < n_ids; i++) {
        starts += ids[i] == ID_IM_START;
        ends += ids[i] == ID_IM_END;
    }
    CHECK(starts == turns + 1 && ends == turns);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private NUL-terminated copy: message contents are C strings. */
    uint8_t *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    const uint8_t *p = buf, *end = buf + size;
    cv_str f[3];
    for (int i = 0; i < 3; i++) {
        size_t len;
        f[i].ptr = next_field(&p, end, &len);
        f[i].len = len;
    }
    cv_chat_family fam;
    cv_error err;
    if (cv_chat_detect(f[0], f[1], f[2], &fam, &err) == CV_OK && strlen(cv_chat_family_name(fam)) == 0)
        abort();

    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    cv_chat_msg msgs[MAX_MSGS];
    size_t n = 0;
    while (p < end && n < MAX_MSGS) {
        msgs[n].role = roles[*p++ & 3];
        size_t len;
        msgs[n].content = next_field(&p, end, &len);
        n++;
    }
    for (int fi = CV_CHAT_LLAMA2; fi <= CV_CHAT_GEMMA; fi++) {
        for (int gen = 0; gen < 2; gen++) {
            cv_chat_prompt out;
            if (cv_chat_apply((cv_chat_family)fi, msgs, n, gen, &out, &err) != CV_OK) {
                if (out.text || out.content) abort();
                continue;
            }
            check_spans(&out, msgs, n, fi == CV_CHAT_CHATML);
            cv_chat_prompt_free(&out);
        }
        if (fi == CV_CHAT_CHATML || fi == CV_CHAT_QWEN2) check_chatml_ids((cv_chat_family)fi, msgs, n);
    }
    free(buf);
    return 0;
}
