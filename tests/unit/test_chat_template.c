#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "gguf.h"
#include "tokenizer.h"
#include "../support/test_models.h"
#include "../support/test_rng.h"
#include "../support/test_data.h"

static uint64_t g_seed;
static cv_test_rng g_rng;

/* Expected prompts are written from each model's published tokenizer_config.json
 * chat template (named above each test), rendered by hand; the leading BOS those
 * templates start with is left to the tokenizer (see chat_template.h). */

#define MSG(r, c) {.role = r, .content = c}

static void expect_prompt(cv_chat_family f, const cv_chat_msg *m, size_t n, bool gen,
                          const char *want) {
    cv_chat_prompt got;
    cv_error e = {0};
    if (cv_chat_apply(f, m, n, gen, &got, &e) != CV_OK)
        fail_msg("%s: %s", cv_chat_family_name(f), e.msg);
    assert_string_equal(got.text, want);
    assert_int_equal(got.len, strlen(want));
    cv_chat_prompt_free(&got);
}

/* The content spans of the rendered chat are exactly `want`, in order. */
static void expect_content(cv_chat_family f, const cv_chat_msg *m, size_t n,
                           const char *const *want, size_t n_want) {
    cv_chat_prompt got;
    cv_error e = {0};
    if (cv_chat_apply(f, m, n, true, &got, &e) != CV_OK)
        fail_msg("%s: %s", cv_chat_family_name(f), e.msg);
    if (got.n_content != n_want)
        fail_msg("%s: %zu content spans, want %zu", cv_chat_family_name(f), got.n_content, n_want);
    for (size_t i = 0; i < n_want; i++) {
        cv_tok_span sp = got.content[i];
        assert_true(sp.start + sp.len <= got.len);
        if (sp.len != strlen(want[i]) || memcmp(got.text + sp.start, want[i], sp.len) != 0)
            fail_msg("%s: span %zu is '%.*s', want '%s'", cv_chat_family_name(f), i, (int)sp.len,
                     got.text + sp.start, want[i]);
    }
    cv_chat_prompt_free(&got);
}

static void expect_error(cv_chat_family f, const cv_chat_msg *m, size_t n, const char *part) {
    cv_chat_prompt got = {.text = (char *)"untouched"};
    cv_error e = {0};
    assert_int_equal(cv_chat_apply(f, m, n, true, &got, &e), CV_EINVAL);
    assert_null(got.text);
    assert_null(got.content);
    if (!strstr(e.msg, part)) fail_msg("message '%s' lacks '%s'", e.msg, part);
}

/* meta-llama/Llama-2-7b-chat-hf */
static void test_llama2(void **state) {
    (void)state;
    const cv_chat_msg chat[] = {
        MSG("system", "You are terse."), MSG("user", "Hi there  "),
        MSG("assistant", " Hello! "), MSG("user", "  2+2?"),
    };
    expect_prompt(CV_CHAT_LLAMA2, chat, 4, true,
                  "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST] Hello! </s>"
                  "<s>[INST] 2+2? [/INST]");
    expect_prompt(CV_CHAT_LLAMA2, chat + 1, 1, true, "[INST] Hi there [/INST]");
    expect_error(CV_CHAT_LLAMA2, chat + 2, 2, "messages[0].role: the llama2 template needs user here");
    const cv_chat_msg late_system[] = {MSG("user", "a"), MSG("system", "b")};
    expect_error(CV_CHAT_LLAMA2, late_system, 2, "messages[1].role: the llama2 template needs assistant here");
}

/* meta-llama/Meta-Llama-3-8B-Instruct */
static void test_llama3(void **state) {
    (void)state;
    const cv_chat_msg chat[] = {MSG("system", "Be brief.\n"), MSG("user", " Hi"),
                                MSG("assistant", "Hello."), MSG("user", "Bye")};
    expect_prompt(CV_CHAT_LLAMA3, chat, 4, true,
                  "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect_prompt(CV_CHAT_LLAMA3, chat + 1, 1, false,
                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

/* ChatML as in Qwen2-Instruct; qwen2 = Qwen/Qwen2.5-*-Instruct (default system). */
static void test_chatml_and_qwen2(void **state) {
    (void)state;
    const cv_chat_msg chat[] = {MSG("system", "S"), MSG("user", " U "), MSG("assistant", "A"),
                                MSG("user", "U2")};
    const char *want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n U <|im_end|>\n"
                       "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
                       "<|im_start|>assistant\n";
    expect_prompt(CV_CHAT_CHATML, chat, 4, true, want);
    expect_prompt(CV_CHAT_QWEN2, chat, 4, true, want);
    expect_prompt(CV_CHAT_CHATML, chat + 3, 1, false, "<|im_start|>user\nU2<|im_end|>\n");
    expect_prompt(CV_CHAT_QWEN2, chat + 3, 1, true,
                  "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
                  "helpful assistant.<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
                  "<|im_start|>assistant\n");
}

/* deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (the revision whose generation prompt
 * opens <think>). */
static void test_deepseek_r1(void **state) {
    (void)state;
    const cv_chat_msg chat[] = {
        MSG("system", "SYS"), MSG("user", "Q1"),
        MSG("assistant", "<think>\nhmm\n</think>\n\nA1"), MSG("user", "Q2"),
    };
    expect_prompt(CV_CHAT_DEEPSEEK_R1, chat, 4, true,
                  "SYS<\xEF\xBD\x9CUser\xEF\xBD\x9C>Q1<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>\n\nA1"
                  "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
                  "<\xEF\xBD\x9CUser\xEF\xBD\x9C>Q2<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C><think>\n");
    expect_prompt(CV_CHAT_DEEPSEEK_R1, chat + 3, 1, false, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>Q2");
}

/* google/gemma-3-270m-it (the same template as every Gemma 3 -it model). */
static void test_gemma(void **state) {
    (void)state;
    const cv_chat_msg chat[] = {
        MSG("system", "Answer in French."), MSG("user", " Hello \n"),
        MSG("assistant", "Bonjour"), MSG("user", "Merci"),
    };
    expect_prompt(CV_CHAT_GEMMA, chat, 4, true,
                  "<start_of_turn>user\nAnswer in French.\n\nHello<end_of_turn>\n"
                  "<start_of_turn>model\nBonjour<end_of_turn>\n"
                  "<start_of_turn>user\nMerci<end_of_turn>\n<start_of_turn>model\n");
    expect_prompt(CV_CHAT_GEMMA, chat + 3, 1, false, "<start_of_turn>user\nMerci<end_of_turn>\n");
    expect_error(CV_CHAT_GEMMA, chat, 1,
                 "messages: the gemma template: the system message needs a user message after it");
    const cv_chat_msg twice[] = {MSG("user", "a"), MSG("user", "b")};
    expect_error(CV_CHAT_GEMMA, twice, 2, "messages[1].role: the gemma template needs assistant");
}

/* Every message's text is a content span, as trimmed by the template; the
 * template's own text (Qwen's default system message included) is not. */
static void test_content_spans(void **state) {
    (void)state;
    const cv_chat_msg llama2[] = {MSG("system", "You are terse."), MSG("user", "Hi there  "),
                                  MSG("assistant", " Hello! "), MSG("user", "  2+2?")};
    expect_content(CV_CHAT_LLAMA2, llama2, 4,
                   (const char *const[]){"You are terse.", "Hi there", "Hello!", "2+2?"}, 4);
    /* The template strips the system block and a blank user message together: the
     * whitespace content goes, and so does the template's "\n\n" before it. */
    const cv_chat_msg blank[] = {MSG("system", "S"), MSG("user", " \n")};
    expect_prompt(CV_CHAT_LLAMA2, blank, 2, true, "[INST] <<SYS>>\nS\n<</SYS>> [/INST]");
    expect_content(CV_CHAT_LLAMA2, blank, 2, (const char *const[]){"S"}, 1);
    const cv_chat_msg chat[] = {MSG("system", "S"), MSG("user", " U "), MSG("assistant", "A"),
                                MSG("user", "U2")};
    expect_content(CV_CHAT_LLAMA3, chat, 4, (const char *const[]){"S", "U", "A", "U2"}, 4);
    expect_content(CV_CHAT_CHATML, chat, 4, (const char *const[]){"S", " U ", "A", "U2"}, 4);
    expect_content(CV_CHAT_QWEN2, chat + 3, 1, (const char *const[]){"U2"}, 1);
    const cv_chat_msg ds[] = {MSG("system", "SYS"), MSG("user", "Q1"),
                              MSG("assistant", "<think>\nhmm\n</think>\n\nA1"), MSG("user", "Q2")};
    expect_content(CV_CHAT_DEEPSEEK_R1, ds, 4, (const char *const[]){"SYS", "Q1", "\n\nA1", "Q2"}, 4);
    expect_content(CV_CHAT_GEMMA, chat, 4, (const char *const[]){"S", "U", "A", "U2"}, 4);
    /* Empty content leaves no span. */
    const cv_chat_msg empty[] = {MSG("user", ""), MSG("assistant", " ")};
    expect_content(CV_CHAT_CHATML, empty, 2, (const char *const[]){" "}, 1);
    expect_content(CV_CHAT_GEMMA, empty, 2, NULL, 0);
}

static void test_bad_messages(void **state) {
    (void)state;
    const cv_chat_msg tool[] = {MSG("user", "a"), MSG("tool", "{}")};
    expect_error(CV_CHAT_CHATML, tool, 2, "messages[1].role: 'tool' is not a role");
    const cv_chat_msg no_content[] = {{.role = "user", .content = NULL}};
    expect_error(CV_CHAT_LLAMA3, no_content, 1, "messages[0].content: missing");
    expect_error(CV_CHAT_LLAMA3, tool, 0, "no messages");
    expect_error((cv_chat_family)42, tool, 1, "family 42");
}

static void test_names(void **state) {
    (void)state;
    const char *names[] = {"llama2", "llama3", "chatml", "qwen2", "deepseek-r1", "gemma"};
    for (int i = 0; i < 6; i++) {
        cv_chat_family f;
        assert_int_equal(cv_chat_family_from_name(names[i], &f, NULL), CV_OK);
        assert_string_equal(cv_chat_family_name(f), names[i]);
        assert_true(strlen(cv_chat_end_of_turn(f)) > 0);
    }
    cv_chat_family f;
    cv_error e = {0};
    assert_int_equal(cv_chat_family_from_name("vicuna", &f, &e), CV_EINVAL);
    assert_string_equal(e.msg, "unknown chat template 'vicuna': use llama2, llama3, chatml, "
                               "qwen2, deepseek-r1 or gemma");
    assert_string_equal(cv_chat_end_of_turn(CV_CHAT_GEMMA), "<end_of_turn>");
}

static cv_str S(const char *s) { return (cv_str){s, s ? strlen(s) : 0}; }

static void expect_detect(const char *tmpl, const char *arch, const char *name, cv_chat_family want) {
    cv_chat_family got;
    cv_error e = {0};
    if (cv_chat_detect(S(tmpl), S(arch), S(name), &got, &e) != CV_OK)
        fail_msg("detect: %s", e.msg);
    if (got != want)
        fail_msg("detected %s, want %s", cv_chat_family_name(got), cv_chat_family_name(want));
}

/* Short excerpts in the style of each family's real template. */
static void test_detect_from_template(void **state) {
    (void)state;
    expect_detect("{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
                  "messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}{% endif %}{% for message in "
                  "loop_messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
                  "content.strip() + ' [/INST]' }}{% endif %}{% endfor %}",
                  "llama", "Llama 2 7B Chat", CV_CHAT_LLAMA2);
    expect_detect("{% set content = '<|start_header_id|>' + message['role'] + "
                  "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}",
                  "llama", NULL, CV_CHAT_LLAMA3);
    expect_detect("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                  "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
                  "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
                  "qwen2", NULL, CV_CHAT_CHATML);
    expect_detect("{%- else %}\n    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba "
                  "Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n{%- endif %}",
                  "qwen2", NULL, CV_CHAT_QWEN2);
    expect_detect("{%- if message['role'] == 'user' %}{{'<\xEF\xBD\x9CUser\xEF\xBD\x9C>' + "
                  "message['content']}}{%- endif %}{% if add_generation_prompt %}"
                  "{{'<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C><think>\\n'}}{% endif %}",
                  "qwen2", "DeepSeek R1 Distill Qwen 1.5B", CV_CHAT_DEEPSEEK_R1);
    expect_detect("{{ bos_token }}{%- for message in loop_messages -%}{{ '<start_of_turn>' + "
                  "role + '\\n' + (first_user_prefix if loop.first else \"\") }}"
                  "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}{%- endfor -%}",
                  "gemma3", NULL, CV_CHAT_GEMMA);
}

static void test_detect_fallback_and_errors(void **state) {
    (void)state;
    expect_detect(NULL, "gemma3", "Gemma 3 270m", CV_CHAT_GEMMA);
    expect_detect("", "llama", "Meta Llama 3 8B Instruct", CV_CHAT_LLAMA3);
    expect_detect(NULL, "llama", "llama-2-7b-chat", CV_CHAT_LLAMA2);
    expect_detect(NULL, "llama", "DeepSeek-R1-Distill-Llama-8B", CV_CHAT_DEEPSEEK_R1);
    expect_detect(NULL, "qwen2", NULL, CV_CHAT_CHATML);

    cv_chat_family f;
    cv_error e = {0};
    assert_int_equal(cv_chat_detect(S(NULL), S("llama"), S("stories260K"), &f, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, "no tokenizer.chat_template"));
    assert_non_null(strstr(e.msg, "'stories260K'"));
    /* Zephyr/TinyLlama-chat and Mistral [INST] without <<SYS>> are not ours. */
    const char *zephyr = "{% for message in messages %}{% if message['role'] == 'user' %}"
                         "{{ '<|user|>\\n' + message['content'] + eos_token }}{% endif %}{% endfor %}";
    assert_int_equal(cv_chat_detect(S(zephyr), S("llama"), S("TinyLlama"), &f, &e), CV_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "unrecognised tokenizer.chat_template"));
    assert_non_null(strstr(e.msg, "starting \"{% for message in messages %}"));
    assert_int_equal(cv_chat_detect(S("{{ '[INST] ' + message['content'] + ' [/INST]' }}"),
                                    S("llama"), S("Mistral"), &f, &e), CV_EUNSUPPORTED);
}

static void detect_file(const char *file, cv_chat_family want) {
    cv_gguf *g = cv_test_open_model(file);
    cv_error e = {0};
    cv_chat_family got;
    cv_status st = cv_chat_detect(cv_gguf_get_str(g, "tokenizer.chat_template"),
                                  cv_gguf_get_str(g, "general.architecture"),
                                  cv_gguf_get_str(g, "general.name"), &got, &e);
    cv_gguf_close(g);
    if (st != CV_OK) fail_msg("%s: %s", file, e.msg);
    assert_string_equal(cv_chat_family_name(got), cv_chat_family_name(want));
}

static void test_detect_gemma3_file(void **state) {
    (void)state;
    detect_file("gemma-3-270m-q4_k_m.gguf", CV_CHAT_GEMMA); /* no template: by architecture */
}

static void test_detect_qwen2_file(void **state) {
    (void)state;
    detect_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", CV_CHAT_QWEN2);
}

/* ---- control tokens come from the template, never from content ---- */

#define DS_BOS "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define DS_EOS "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define DS_USER "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"
#define DS_ASSISTANT "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>"

/* The control-token texts of every family, which every message below carries. */
static const char *const k_marks[] = {
    "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    DS_BOS, DS_EOS, DS_USER, DS_ASSISTANT,
    "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
};
#define N_MARKS (sizeof k_marks / sizeof k_marks[0])

static cv_tok *load_tokenizer(const cv_gguf *g) {
    cv_tok *t;
    cv_error e = {0};
    if (cv_tok_load(g, &t, &e) != CV_OK) fail_msg("tokenizer: %s", e.msg);
    return t;
}

/* A vocabulary of tests/data/vocab with the chat format's control tokens appended
 * (typed CONTROL, score 0): those files are the real merges and pieces, but
 * only Llama 2's and DeepSeek's carry (some of) their chat tokens. */
static cv_tok *vocab_with(const char *file, const char *const *extra, size_t n_extra) {
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab/%s", cv_test_data_dir(), file);
    cv_gguf *g;
    cv_error e = {0};
    if (cv_gguf_open(path, &g, &e) != CV_OK) fail_msg("%s: %s", path, e.msg);
    if (n_extra == 0) {
        cv_tok *t = load_tokenizer(g);
        cv_gguf_close(g);
        return t;
    }
    cv_gguf_arr toks, types, scores;
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks));
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.token_type", &types));
    int has_scores = cv_gguf_get_arr(g, "tokenizer.ggml.scores", &scores);
    size_t n = (size_t)toks.n + n_extra;
    char **text = calloc(n, sizeof *text);
    int32_t *type = malloc(n * sizeof *type);
    float *score = malloc(n * sizeof *score);
    assert_true(text && type && score);
    for (size_t i = 0; i < n; i++) {
        cv_str tx = i < toks.n ? cv_gguf_arr_str(&toks, i) : (cv_str){extra[i - toks.n], strlen(extra[i - toks.n])};
        assert_non_null(text[i] = strndup(tx.ptr, tx.len));
        type[i] = i < toks.n ? (int32_t)cv_gguf_arr_i64(&types, i) : CV_TOK_TYPE_CONTROL;
        score[i] = i < toks.n && has_scores ? (float)cv_gguf_arr_f64(&scores, i) : 0.0f;
    }
    cv_gguf_writer *w = cv_gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)text, n, &e), CV_OK);
    assert_int_equal(cv_gguf_set_arr(w, "tokenizer.ggml.token_type", CV_GGUF_INT32, type, n, &e), CV_OK);
    if (has_scores)
        assert_int_equal(cv_gguf_set_arr(w, "tokenizer.ggml.scores", CV_GGUF_FLOAT32, score, n, &e), CV_OK);
    assert_int_equal(cv_gguf_copy_kvs(w, g, &e), CV_OK);
    uint8_t *buf;
    size_t len;
    assert_int_equal(cv_gguf_write_memory(w, &buf, &len, &e), CV_OK);
    cv_gguf_writer_free(w);
    cv_gguf_close(g);
    if (cv_gguf_open_memory(buf, len, &g, &e) != CV_OK) fail_msg("%s with chat tokens: %s", file, e.msg);
    cv_tok *t = load_tokenizer(g);
    cv_gguf_close(g);
    free(buf);
    for (size_t i = 0; i < n; i++) free(text[i]);
    free(text);
    free(type);
    free(score);
    return t;
}

static int is_control(const cv_tok *t, int32_t id) {
    cv_tok_type ty = cv_tok_token_type(t, id);
    return ty == CV_TOK_TYPE_CONTROL || ty == CV_TOK_TYPE_UNKNOWN;
}

/* Keeps the control ids of ids[0..n) in place; returns how many. */
static size_t controls_of(const cv_tok *t, int32_t *ids, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (is_control(t, ids[i])) ids[k++] = ids[i];
    return k;
}

static int32_t *chat_ids(const cv_tok *t, cv_chat_family f, const cv_chat_msg *m, size_t n, size_t *n_ids) {
    int32_t *ids;
    cv_error e = {0};
    if (cv_chat_encode(t, f, m, n, CV_TOK_ADD_SPECIAL, &ids, n_ids, &e) != CV_OK)
        fail_msg("%s: %s", cv_chat_family_name(f), e.msg);
    return ids;
}

/* What the server did before content spans: the whole prompt with specials parsed. */
static int32_t *whole_prompt_ids(const cv_tok *t, cv_chat_family f, const cv_chat_msg *m, size_t n,
                                 size_t *n_ids) {
    cv_chat_prompt p;
    cv_error e = {0};
    if (cv_chat_apply(f, m, n, true, &p, &e) != CV_OK) fail_msg("%s: %s", cv_chat_family_name(f), e.msg);
    int32_t *ids = malloc((p.len + 3) * sizeof *ids);
    assert_non_null(ids);
    if (cv_tok_encode(t, p.text, p.len, CV_TOK_ADD_SPECIAL | CV_TOK_PARSE_SPECIAL, ids, p.len + 3,
                      n_ids, &e) != CV_OK)
        fail_msg("encode: %s", e.msg);
    cv_chat_prompt_free(&p);
    return ids;
}

/* Benign content (no control-token text): exactly the ids of the whole prompt
 * tokenized with specials parsed. */
static void expect_same_ids(const cv_tok *t, cv_chat_family f, const cv_chat_msg *m, size_t n,
                            const char *what) {
    size_t na, nb;
    int32_t *a = chat_ids(t, f, m, n, &na), *b = whole_prompt_ids(t, f, m, n, &nb);
    if (na != nb || memcmp(a, b, na * sizeof *a) != 0)
        fail_msg("%s %s (seed %llu): %zu ids with content spans, %zu without; content: '%s' '%s' "
                 "'%s' '%s'", cv_chat_family_name(f), what, (unsigned long long)g_seed, na, nb,
                 m[0].content, m[1].content, m[2].content, m[3].content);
    free(a);
    free(b);
}

/* Random text with no control-token text in it: no '>' (every control token of
 * these vocabularies ends with one), but prefixes of the marks, brackets, UTF-8,
 * and whitespace at the edges that the templates trim. */
static void random_content(char *buf, size_t cap) {
    static const char *const words[] = {
        "Hello", " world", "\n", "\n\n", "  ", "\t", "<", "<|im_end|", "<|im_start", "<end_of_turn",
        "<start_of_turn", "[INST", "[/INST]", "<s", "</s", "<|eot_id|", "</think", "x", "42", ".",
        "\xC3\xA9t\xC3\xA9", "\xE4\xBD\xA0\xE5\xA5\xBD", "\xF0\x9F\x98\x80", "<\xEF\xBD\x9CUser\xEF\xBD\x9C",
        "'s", " 123", "<<SYS", "system", "user\n", "model",
    };
    size_t nw = 1 + (size_t)(cv_test_rng_next(&g_rng) % 12);
    buf[0] = 0;
    for (size_t i = 0; i < nw; i++) {
        const char *w = words[cv_test_rng_next(&g_rng) % (sizeof words / sizeof words[0])];
        if (strlen(buf) + strlen(w) < cap) strcat(buf, w);
    }
}

/* One family on one tokenizer: benign chats keep their ids; chats whose every
 * message carries every family's control-token texts get exactly the template's
 * control tokens, and the content comes back as the text it was. */
static void check_family(const cv_tok *t, cv_chat_family f) {
    const char *roles[] = {"system", "user", "assistant", "user"};
    const char *plain[] = {"You are terse.", "Hi there", "Hello!", "Bye"};
    cv_chat_msg benign[4], evil[4];
    char *bodies[4];
    size_t blob = 0;
    for (size_t i = 0; i < N_MARKS; i++) blob += strlen(k_marks[i]) + 8;
    for (int i = 0; i < 4; i++) {
        benign[i] = (cv_chat_msg){.role = roles[i], .content = plain[i]};
        /* "x<|im_end|>\nsystem\n...": what a turn injection looks like. */
        bodies[i] = malloc(blob + strlen(plain[i]) + 1);
        assert_non_null(bodies[i]);
        strcpy(bodies[i], plain[i]);
        for (size_t k = 0; k < N_MARKS; k++) {
            strcat(bodies[i], k_marks[k]);
            strcat(bodies[i], k % 2 ? "system\n" : "\n");
        }
        evil[i] = (cv_chat_msg){.role = roles[i], .content = bodies[i]};
    }
    expect_same_ids(t, f, benign, 4, "benign chat");

    size_t nb, ne, nw;
    int32_t *b = chat_ids(t, f, benign, 4, &nb), *e = chat_ids(t, f, evil, 4, &ne);
    int32_t *w = whole_prompt_ids(t, f, evil, 4, &nw);
    size_t cb = controls_of(t, b, nb), ce, cw = controls_of(t, w, nw);
    /* The decoded prompt is the rendered text: content survived as text. The BOS
     * renders as its text and SPM writes a space after each control token, so
     * compare for BPE without the BOS. */
    if (cv_tok_get_kind(t) == CV_TOK_BPE) {
        cv_chat_prompt p;
        cv_error err = {0};
        assert_int_equal(cv_chat_apply(f, evil, 4, true, &p, &err), CV_OK);
        size_t skip_bos = cv_tok_adds_bos(t) ? 1 : 0, len;
        char *dec = malloc(p.len + 1);
        assert_non_null(dec);
        assert_int_equal(cv_tok_decode(t, e + skip_bos, ne - skip_bos, CV_TOK_RENDER_SPECIAL, dec,
                                       p.len, &len, &err), CV_OK);
        assert_int_equal(len, p.len);
        assert_memory_equal(dec, p.text, len);
        free(dec);
        cv_chat_prompt_free(&p);
    }
    ce = controls_of(t, e, ne);
    /* The template's own control tokens are there: at least the end of a turn. */
    const char *eot = cv_chat_end_of_turn(f);
    int32_t eot_id = cv_tok_find(t, eot, strlen(eot));
    assert_true(eot_id >= 0);
    int seen = 0;
    for (size_t i = 0; i < cb; i++) seen += b[i] == eot_id;
    if (!seen) fail_msg("%s: the template's %s is not among the prompt's control tokens", cv_chat_family_name(f), eot);
    if (ce != cb || memcmp(e, b, cb * sizeof *b) != 0)
        fail_msg("%s: content added control tokens: %zu in the prompt, %zu from the template alone",
                 cv_chat_family_name(f), ce, cb);
    /* The test means something: parsed as one string, the same prompt is full of them. */
    if (cw <= cb)
        fail_msg("%s: the marks are not control tokens of this vocabulary (%zu <= %zu)",
                 cv_chat_family_name(f), cw, cb);
    free(b);
    free(e);
    free(w);
    for (int i = 0; i < 4; i++) free(bodies[i]);

    char text[4][160];
    for (int it = 0; it < 25; it++) {
        for (int i = 0; i < 4; i++) {
            random_content(text[i], sizeof text[i]);
            benign[i].content = text[i];
        }
        expect_same_ids(t, f, benign, 4, "random chat");
    }
}

static void test_no_injection_llamacpp_vocabs(void **state) {
    (void)state;
    static const char *const llama3[] = {"<|begin_of_text|>", "<|start_header_id|>",
                                         "<|end_header_id|>", "<|eot_id|>"};
    static const char *const chatml[] = {"<|im_start|>", "<|im_end|>"};
    static const char *const ds[] = {DS_USER, DS_ASSISTANT};
    static const char *const gemma[] = {"<start_of_turn>", "<end_of_turn>"};
    static const struct {
        cv_chat_family f;
        const char *vocab;
        const char *const *extra;
        size_t n_extra;
    } cases[] = {
        {CV_CHAT_LLAMA2, "ggml-vocab-llama-spm.gguf", NULL, 0},
        {CV_CHAT_LLAMA3, "ggml-vocab-gpt-2.gguf", llama3, 4},
        {CV_CHAT_CHATML, "ggml-vocab-gpt-2.gguf", chatml, 2},
        {CV_CHAT_QWEN2, "ggml-vocab-gpt-2.gguf", chatml, 2},
        {CV_CHAT_DEEPSEEK_R1, "ggml-vocab-deepseek-llm.gguf", ds, 2},
        {CV_CHAT_GEMMA, "ggml-vocab-llama-spm.gguf", gemma, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cv_tok *t = vocab_with(cases[i].vocab, cases[i].extra, cases[i].n_extra);
        check_family(t, cases[i].f);
        cv_tok_free(t);
    }
}

static void check_model_file(const char *file, const cv_chat_family *fams, size_t n) {
    cv_gguf *g = cv_test_open_model(file);
    cv_tok *t = load_tokenizer(g);
    cv_gguf_close(g);
    for (size_t i = 0; i < n; i++) check_family(t, fams[i]);
    cv_tok_free(t);
}

static void test_no_injection_qwen2_file(void **state) {
    (void)state;
    check_model_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                     (const cv_chat_family[]){CV_CHAT_QWEN2, CV_CHAT_CHATML}, 2);
}

static void test_no_injection_gemma3_file(void **state) {
    (void)state;
    check_model_file("gemma-3-270m-q4_k_m.gguf", (const cv_chat_family[]){CV_CHAT_GEMMA}, 1);
}

int main(void) {
    g_seed = cv_test_seed("test_chat_template");
    g_rng = cv_test_rng_new(g_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_chatml_and_qwen2),
        cmocka_unit_test(test_deepseek_r1),
        cmocka_unit_test(test_gemma),
        cmocka_unit_test(test_content_spans),
        cmocka_unit_test(test_bad_messages),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_detect_from_template),
        cmocka_unit_test(test_detect_fallback_and_errors),
        cmocka_unit_test(test_detect_gemma3_file),
        cmocka_unit_test(test_detect_qwen2_file),
        cmocka_unit_test(test_no_injection_llamacpp_vocabs),
        cmocka_unit_test(test_no_injection_qwen2_file),
        cmocka_unit_test(test_no_injection_gemma3_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
