/* tool_choice: a chat request's tools and tool_choice (either protocol) checked and
 * turned into what the layers below take: the tools the template is given, how calls
 * are parsed out of the answer (the template's syntax, tool_calls.h), how many may
 * come, and whether one must.
 *
 * tools is OpenAI's array: each {"type": "function", "function": {"name", "description",
 * "parameters"}} (type may be left out; name a non-empty string; parameters, when given,
 * an object). choice: "" or "auto" (the model decides), "none" (the template gets no
 * tools and nothing is parsed), "required"; function: "" or the one function to call
 * (the template then gets that tool only). Errors name the field as OpenAI spells it
 * ("tools[1].function.name", "tool_choice").
 *
 * When a call is required, the output is constrained (grammar.h) to the syntax's calls
 * with each tool's parameters as their arguments' JSON schema (json_schema.h; a tool
 * without parameters takes any object), so it always parses, in the form the template
 * writes: hermes <tool_call>\n{"name": N, "arguments": {...}}\n</tool_call>, llama3
 * {"name": N, "parameters": {...}}, mistral [TOOL_CALLS][{"name": N, "arguments":
 * {...}}] or [TOOL_CALLS]N[ARGS]{...}, deepseek <calls_begin><call_begin>function<sep>N
 * and a ```json fence, or <call_begin>N<sep>{...}<call_end>, then <calls_end>; several
 * unless parallel calls are off. Markers that are control tokens ([TOOL_CALLS],
 * DeepSeek's) are token terminals of the grammar (grammar.h): the model can write them
 * only as those tokens, and only there.
 */
#ifndef CV_TOOL_CHOICE_H
#define CV_TOOL_CHOICE_H

#include <stddef.h>

#include "chat_format.h"
#include "cv_error.h"
#include "tool_calls.h"

typedef struct cv_tool_plan {
    char *template_tools;  /* JSON array for the template; NULL: none */
    cv_tool_syntax syntax; /* how calls are parsed out; NONE: they are not */
    size_t max_calls;      /* 1 when parallel calls are off, else 0 (no limit) */
    int required;          /* the answer must call a tool (required, or a function named) */
    char *function;        /* the function it must call; NULL: any */
    char *grammar;         /* GBNF the output is held to (a required call); NULL: none */
    char param[64];        /* on failure: the field at fault */
} cv_tool_plan;

/* tools NULL or "": none. CV_OK with *out filled, else CV_EINVAL (out->param names the
 * field; a parameters schema outside json_schema.h's subset when a call is required)
 * or CV_ENOMEM; free it with cv_tool_plan_free either way. */
cv_status cv_tool_plan_make(const cv_chat_format *fmt, const char *tools, const char *choice, const char *function,
                            int parallel, cv_tool_plan *out, cv_error *err);
void cv_tool_plan_free(cv_tool_plan *p);

#endif
