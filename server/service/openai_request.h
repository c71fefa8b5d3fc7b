/* openai_request: the body of an OpenAI /v1/chat/completions or /v1/completions
 * request (JSON) into a checked, protocol-free request. No I/O, no server state: the
 * HTTP transport hands the bytes over, and the fuzzer (tests/fuzz/fuzz_openai_request.c)
 * calls it the same way.
 *
 * Accepted: model, messages (roles system, developer (= system), user, assistant, tool;
 * content a string, null for an assistant, or an array of {"type":"text","text":...}
 * parts, joined), prompt (a string or an array of exactly one string), max_tokens and
 * max_completion_tokens (the latter wins), temperature [0, 2], top_p (0, 1],
 * stop (a string or up to 4 strings), seed (any integer, as its 64-bit pattern),
 * presence_penalty and frequency_penalty [-2, 2], logprobs (chat: bool; completions:
 * an integer 0..20, the alternatives), top_logprobs 0..20 (chat, needs logprobs),
 * user, n (only 1), stream, stream_options.include_usage, reasoning_format (chat:
 * "deepseek", the default, puts think-block text in reasoning_content; "none" leaves
 * it in content, as llama.cpp's server names them), and the extension
 * "corvid": {"model_version", "ignore_eos", "top_k", "min_p", "repetition_penalty", "grammar", "rag": {"enable"
 * (default true), "knowledge_base", "top_k", "min_score", "sources": [...], "policy"}} (the
 * rag object is gRPC's RagOptions: retrieval first, citations in the answer).
 * Constrained output: response_format {"type": "text" | "json_object" | "json_schema",
 * "json_schema": {"name", "schema", "strict"}} (json_schema.h's subset; a schema it
 * refuses is a refusal naming the keyword, param response_format.json_schema.schema),
 * or corvid.grammar, GBNF text (grammar.h), checked here; not both.
 * Unknown fields are ignored, as OpenAI's API does. null means absent.
 *
 * Refusals name the field as the API spells it (param) with a message: a wrong type
 * ("temperature: expected a number, got string"), a value out of range, a text that is
 * not valid UTF-8 or holds NUL (the same words as gRPC's, rpc_message.h), n != 1,
 * malformed JSON with the byte where it broke.
 *
 * Tools (chat): tools (an array, its shape checked by tool_choice.h), tool_choice ("auto",
 * "none", "required" or {"type": "function", "function": {"name": N}}),
 * parallel_tool_calls (default true); an assistant message's tool_calls (its
 * function.arguments strings become objects, as the templates read them) and a tool
 * message's tool_call_id and name go to the template.
 */
#ifndef CV_OPENAI_REQUEST_H
#define CV_OPENAI_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "cv_error.h"

#define CV_OAI_MAX_STOP 4
#define CV_OAI_MAX_LOGPROBS 20
#define CV_OAI_MAX_RAG_SOURCES 16

typedef enum cv_oai_kind { CV_OAI_CHAT, CV_OAI_COMPLETION } cv_oai_kind;

typedef struct cv_oai_request {
    cv_oai_kind kind;
    const char *model;          /* "" when absent */
    const char *model_version;  /* corvid.model_version: pins a version; "" when absent */
    cv_chat_msg *messages;      /* chat: roles system / user / assistant / tool (developer is system) */
    size_t n_messages;
    const char *prompt;         /* completions */
    int32_t max_tokens;         /* 0: the server's default */
    float temperature;          /* 1 when absent (OpenAI's default) */
    float top_p;                /* 1 when absent */
    int32_t top_k;              /* corvid.top_k, 0 = off */
    float min_p;                /* corvid.min_p, 0 = off */
    float repetition_penalty;   /* corvid.repetition_penalty, 1 = off */
    float presence_penalty, frequency_penalty;
    const char *stop[CV_OAI_MAX_STOP];
    size_t n_stop;
    int has_seed;
    uint64_t seed;
    int logprobs;               /* token logprobs wanted */
    int32_t top_logprobs;       /* alternatives per token, 0..CV_OAI_MAX_LOGPROBS */
    int ignore_eos;             /* corvid.ignore_eos (benchmarks) */
    const char *user;           /* "" when absent */
    int rag;                    /* corvid.rag given and enabled: retrieval first */
    const char *rag_knowledge_base, *rag_policy;  /* "" when absent */
    uint32_t rag_top_k;
    float rag_min_score;
    const char *rag_sources[CV_OAI_MAX_RAG_SOURCES];
    size_t n_rag_sources;
    int stream;
    int include_usage;          /* stream_options.include_usage */
    int reasoning_inline;       /* reasoning_format "none": no reasoning_content split */
    const char *grammar;        /* GBNF from response_format or corvid.grammar; NULL: free text */
    const char *tools;          /* chat: the tools array as JSON text; NULL when absent or empty */
    const char *tool_choice;    /* "" when absent */
    const char *tool_function;  /* tool_choice's function name; "" when absent */
    int parallel_tool_calls;
    void *priv;                 /* the parsed document and joined texts: freed with the request */
} cv_oai_request;

typedef struct cv_oai_error {
    char param[64];             /* the field as the API spells it ("messages[1].content"), "" for the body */
    char message[512];
} cv_oai_error;

/* CV_OK with *out filled (free it with cv_oai_request_free, also after a failure), or
 * CV_EINVAL with the field and message in *err. body need not be NUL-terminated. */
cv_status cv_oai_parse(cv_oai_kind kind, const char *body, size_t len, cv_oai_request *out, cv_oai_error *err);
void cv_oai_request_free(cv_oai_request *r);

#endif
