/* Fuzzes the OpenAI request parser (openai_request.h), the part of the HTTP API that
 * reads untrusted bodies. The first byte picks chat or completions; the rest is the body.
 * A request that parses must hold what the contract says: texts that are valid UTF-8
 * without NUL, at most CV_OAI_MAX_STOP stops, top_logprobs within range, known roles,
 * tool fields that are text too, and a grammar (from response_format or corvid.grammar)
 * that compiles.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "grammar.h"
#include "openai_request.h"
#include "utf8.h"

static void check_text(const char *s) {
    assert(s);
    assert(cv_utf8_check(s, strlen(s), NULL) == CV_UTF8_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    cv_oai_kind kind = data[0] & 1 ? CV_OAI_COMPLETION : CV_OAI_CHAT;
    cv_oai_request r;
    cv_oai_error e;
    if (cv_oai_parse(kind, (const char *)data + 1, size - 1, &r, &e) == CV_OK) {
        check_text(r.model);
        check_text(r.model_version);
        check_text(r.user);
        assert(r.n_stop <= CV_OAI_MAX_STOP);
        for (size_t i = 0; i < r.n_stop; i++) check_text(r.stop[i]);
        assert(r.top_logprobs >= 0 && r.top_logprobs <= CV_OAI_MAX_LOGPROBS);
        assert(r.temperature >= 0 && r.temperature <= 2 && r.top_p > 0 && r.top_p <= 1);
        if (kind == CV_OAI_CHAT) {
            assert(r.n_messages > 0);
            for (size_t i = 0; i < r.n_messages; i++) {
                const char *role = r.messages[i].role;
                assert(!strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant") ||
                       !strcmp(role, "tool"));
                check_text(r.messages[i].content);
                if (r.messages[i].tool_calls) check_text(r.messages[i].tool_calls);
                if (r.messages[i].tool_call_id) check_text(r.messages[i].tool_call_id);
                if (r.messages[i].name) check_text(r.messages[i].name);
            }
            if (r.tools) check_text(r.tools);
            check_text(r.tool_choice);
            check_text(r.tool_function);
        } else {
            check_text(r.prompt);
        }
        if (r.grammar) { /* response_format or corvid.grammar: text the engine can compile */
            cv_error ge;
            check_text(r.grammar);
            assert(cv_grammar_check(r.grammar, strlen(r.grammar), &ge) == CV_OK);
        }
    } else {
        assert(e.message[0]);
        assert(cv_utf8_check(e.message, strlen(e.message), NULL) == CV_UTF8_OK);
    }
    cv_oai_request_free(&r);
    return 0;
}
