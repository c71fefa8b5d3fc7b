/* tool_calls: a model's tool calls cut out of its output, as it streams.
 *
 * Each family writes calls its own way (the syntax follows from its chat template):
 *   hermes    Qwen2.5/Qwen3, Hermes: <tool_call>{"name": N, "arguments": {...}}</tool_call>
 *   llama3    Llama 3.1-3.3: the answer is {"name": N, "parameters": {...}} (several
 *             joined by ';'), or that after <|python_tag|>
 *   mistral   [TOOL_CALLS][{"name": N, "arguments": {...}}, ...] (v3), or
 *             [TOOL_CALLS]N[ARGS]{...} repeated (Mistral Small 3.2, Devstral)
 *   deepseek  <｜tool▁calls▁begin｜> then per call <｜tool▁call▁begin｜>function<｜tool▁sep｜>N
 *             ```json {...} ```<｜tool▁call▁end｜> (V3, R1) or ...begin｜>N<｜tool▁sep｜>{...}
 *             <｜tool▁call▁end｜> (V3.1), then <｜tool▁calls▁end｜>
 * In hermes and llama3, an answer that is nothing but call objects (joined by ';'),
 * bare or in a ```json fence, is taken as calls too: small models (Qwen2.5-Coder 0.5B)
 * often leave out <tool_call>. The markers of llama3, mistral and deepseek are control
 * tokens: the engine must render them as text (cv_tool_syntax_needs_markers).
 *
 * The output is untrusted text. The parser hands on content at once, except bytes that
 * may begin a call's marker (held until the next piece decides) and whitespace (held
 * until more content comes; dropped when a call follows it). A call is kept whole until
 * its end marker, or the end of the output where the syntax has none (llama3, mistral)
 * or the model stopped without writing it: only a call whose JSON parses, with a
 * non-empty string name and object arguments (a JSON string holding an object is taken
 * too), comes out as a call; anything else (an unterminated or truncated call, invalid
 * JSON, a call past max_bytes) comes out as content, byte for byte. Arguments come out
 * as compact JSON.
 */
#ifndef CV_TOOL_CALLS_H
#define CV_TOOL_CALLS_H

#include <stddef.h>

#include "cv_error.h"

typedef enum cv_tool_syntax {
    CV_TOOL_SYNTAX_NONE, /* no calls parsed: all output is content */
    CV_TOOL_SYNTAX_HERMES,
    CV_TOOL_SYNTAX_LLAMA3,
    CV_TOOL_SYNTAX_MISTRAL,
    CV_TOOL_SYNTAX_DEEPSEEK,
} cv_tool_syntax;

/* The syntax a chat template's calls take, from the markers its text writes. */
cv_tool_syntax cv_tool_syntax_of_template(const char *tmpl, size_t len);
/* "none", "hermes", "llama3", "mistral", "deepseek". */
const char *cv_tool_syntax_name(cv_tool_syntax s);
/* Whether the syntax's markers are control tokens, which a decoder drops unless told. */
int cv_tool_syntax_needs_markers(cv_tool_syntax s);

typedef struct cv_tool_sink {
    void (*content)(void *ctx, const char *text, size_t len);
    /* name and args NUL-terminated, valid during the call; args a JSON object. */
    void (*call)(void *ctx, const char *name, const char *args);
    void *ctx;
} cv_tool_sink;

typedef struct cv_tool_parser cv_tool_parser;

/* max_calls: calls past it are dropped (OpenAI's parallel_tool_calls false: 1), 0 for
 * no limit; max_bytes: a call's text past it is content (0: 256 KiB). */
cv_status cv_tool_parser_new(cv_tool_syntax s, size_t max_calls, size_t max_bytes, const cv_tool_sink *sink,
                             cv_tool_parser **out, cv_error *err);
void cv_tool_parser_free(cv_tool_parser *p);
/* CV_ENOMEM when the held text cannot grow (what was handed on stays handed on). */
cv_status cv_tool_parser_feed(cv_tool_parser *p, const char *text, size_t len);
/* The end of the output: a pending call is parsed or handed on as content. */
cv_status cv_tool_parser_finish(cv_tool_parser *p);
/* Calls handed on so far. */
size_t cv_tool_parser_calls(const cv_tool_parser *p);

#endif
