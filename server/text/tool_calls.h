/* tool_calls: a model's tool calls cut out of its output, as it streams.
 *
 * Each family writes calls its own way (the syntax follows from its chat template):
 *   hermes    Qwen2.5/Qwen3, Hermes: <tool_call>{"name": N, "arguments": {...}}</tool_call>
 *   llama3    Llama 3.1-3.3: the answer is {"name": N, "parameters": {...}} (several
 *             joined by ';'), or that after <|python_tag|>; a built-in tool as
 *             <|python_tag|>N.call(k="v", n=1) (Python keyword arguments: strings,
 *             numbers, True/False/None) comes out as the call N {"k": "v", "n": 1}
 *   mistral   [TOOL_CALLS][{"name": N, "arguments": {...}}, ...] (v3), or
 *             [TOOL_CALLS]N[ARGS]{...} repeated (Mistral Small 3.2, Devstral)
 *   deepseek  <｜tool▁calls▁begin｜> then per call <｜tool▁call▁begin｜>function<｜tool▁sep｜>N
 *             ```json {...} ```<｜tool▁call▁end｜> (V3, R1) or ...begin｜>N<｜tool▁sep｜>{...}
 *             <｜tool▁call▁end｜> (V3.1), then <｜tool▁calls▁end｜>
 * In hermes and llama3, an answer that opens with call objects (joined by ';'), bare or
 * in a ```json fence, is taken as calls too: small models (Qwen2.5-Coder 0.5B) often
 * leave out <tool_call>. The markers of llama3, mistral and deepseek are control
 * tokens: the engine must render them as text (cv_tool_syntax_needs_markers).
 *
 * The output is untrusted text. Content is handed on at once, except bytes that may
 * begin a call's marker (held until the next piece decides) and whitespace (held until
 * more content comes; dropped when a call follows it). A call streams: it begins
 * (call_begin, its name) as soon as its name and the '{' opening its arguments have
 * come, in the usual order (name first); then its arguments' text goes on piece by
 * piece as the model writes it (call_args: the pieces joined are the object exactly as
 * written), checked as JSON byte by byte; call_end says whether the object closed. A
 * call written another way (arguments before the name, arguments as a JSON string
 * holding the object, a built-in tool) is held until it is whole and then comes out in
 * one piece (that object as compact JSON). Until a call has begun, text that turns out
 * not to be one (no name, invalid JSON, past max_bytes, cut off) is content, byte for
 * byte. Once begun, a call stays a call, as in OpenAI's API: output that stops inside
 * its arguments (max_tokens) ends it incomplete, and a byte its JSON does not allow
 * ends it incomplete there, the rest being content. Text after the calls that fits no
 * call is content.
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
/* Which of its syntax's forms a template writes (bits): mistral's N[ARGS]{...} (else
 * [{"name": N, "arguments": {...}}]); deepseek's function<sep>N ```json fence (V3, R1;
 * else N<sep>{...} as V3.1). What a required call is held to (tool_choice.h). */
#define CV_TOOL_FORM_ARGS_MARKER 1u
#define CV_TOOL_FORM_FENCED 2u
unsigned cv_tool_forms_of_template(const char *tmpl, size_t len);
/* "none", "hermes", "llama3", "mistral", "deepseek". */
const char *cv_tool_syntax_name(cv_tool_syntax s);
/* Whether the syntax's markers are control tokens, which a decoder drops unless told. */
int cv_tool_syntax_needs_markers(cv_tool_syntax s);

typedef struct cv_tool_sink {
    void (*content)(void *ctx, const char *text, size_t len);
    /* A call begins; name NUL-terminated, valid during the call. */
    void (*call_begin)(void *ctx, const char *name);
    /* The next piece (len > 0) of the current call's arguments. */
    void (*call_args)(void *ctx, const char *text, size_t len);
    /* The current call is over; complete: its arguments closed as a JSON object. */
    void (*call_end)(void *ctx, int complete);
    void *ctx;
} cv_tool_sink;

typedef struct cv_tool_parser cv_tool_parser;

/* max_calls: calls past it are dropped (OpenAI's parallel_tool_calls false: 1), 0 for
 * no limit; max_bytes: a call held past it (not begun, or held whole) is content
 * (0: 256 KiB). */
cv_status cv_tool_parser_new(cv_tool_syntax s, size_t max_calls, size_t max_bytes, const cv_tool_sink *sink,
                             cv_tool_parser **out, cv_error *err);
void cv_tool_parser_free(cv_tool_parser *p);
/* CV_ENOMEM when the held text cannot grow (what was handed on stays handed on). */
cv_status cv_tool_parser_feed(cv_tool_parser *p, const char *text, size_t len);
/* The end of the output: a call being written ends, held text is content. */
cv_status cv_tool_parser_finish(cv_tool_parser *p);
/* Calls begun so far (dropped ones past max_calls not counted). */
size_t cv_tool_parser_calls(const cv_tool_parser *p);

#endif
