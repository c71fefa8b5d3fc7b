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

/* Expected prompts are written from each model's published tokenizer_config.json
 * chat template (named above each test), rendered by hand; the leading BOS those
 * templates start with is left to the tokenizer (see chat_template.h). */

#define MSG(r, c) {.role = r, .content = c}

static void expect_prompt(cv_chat_family f, const cv_chat_msg *m, size_t n, bool gen,
                          const char *want) {
    char *got = NULL;
    cv_error e = {0};
    if (cv_chat_apply(f, m, n, gen, &got, &e) != CV_OK)
        fail_msg("%s: %s", cv_chat_family_name(f), e.msg);
    assert_string_equal(got, want);
    free(got);
}

static void expect_error(cv_chat_family f, const cv_chat_msg *m, size_t n, const char *part) {
    char *got = (char *)"untouched";
    cv_error e = {0};
    assert_int_equal(cv_chat_apply(f, m, n, true, &got, &e), CV_EINVAL);
    assert_null(got);
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
    expect_error(CV_CHAT_LLAMA2, chat + 2, 2, "message 0 should be user");
    const cv_chat_msg late_system[] = {MSG("user", "a"), MSG("system", "b")};
    expect_error(CV_CHAT_LLAMA2, late_system, 2, "message 1 should be assistant");
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
    expect_error(CV_CHAT_GEMMA, chat, 1, "system message needs a user message after it");
    const cv_chat_msg twice[] = {MSG("user", "a"), MSG("user", "b")};
    expect_error(CV_CHAT_GEMMA, twice, 2, "gemma template: message 1 should be assistant");
}

static void test_bad_messages(void **state) {
    (void)state;
    const cv_chat_msg tool[] = {MSG("user", "a"), MSG("tool", "{}")};
    expect_error(CV_CHAT_CHATML, tool, 2, "message 1 has role 'tool'");
    const cv_chat_msg no_content[] = {{.role = "user", .content = NULL}};
    expect_error(CV_CHAT_LLAMA3, no_content, 1, "message 0 has no content");
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

/* The real files `make models` fetches, when they are in the cache. */
static void detect_file(const char *file, cv_chat_family want) {
    const char *dir = getenv("CORVID_MODELS");
    const char *home = getenv("HOME");
    char path[1024];
    if (dir) snprintf(path, sizeof path, "%s/%s", dir, file);
    else snprintf(path, sizeof path, "%s/.cache/corvid/models/%s", home ? home : "", file);
    cv_gguf *g = NULL;
    cv_error e = {0};
    if (cv_gguf_open(path, &g, &e) != CV_OK) {
        printf("SKIP: %s not available (%s); `make models` fetches it\n", file, e.msg);
        skip();
    }
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_chatml_and_qwen2),
        cmocka_unit_test(test_deepseek_r1),
        cmocka_unit_test(test_gemma),
        cmocka_unit_test(test_bad_messages),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_detect_from_template),
        cmocka_unit_test(test_detect_fallback_and_errors),
        cmocka_unit_test(test_detect_gemma3_file),
        cmocka_unit_test(test_detect_qwen2_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
