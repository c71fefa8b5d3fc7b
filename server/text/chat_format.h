/* chat_format: how a model's chat messages become its prompt. By default the GGUF's
 * own tokenizer.chat_template, run by the Jinja interpreter (jinja.h) with the
 * variables Hugging Face's apply_chat_template passes (messages, tools, documents,
 * add_generation_prompt, bos_token, eos_token, and any extra ones); one of the built-in
 * families of chat_template.h when the file has none, or when a request names one.
 *
 * Either way a message's text stays opaque: the prompt reports where data lies
 * (messages and tools, every role, the system message included), and
 * cv_chat_format_encode never reads a control token there.
 *
 * As llama.cpp does, the bos_token a template writes first is left out of the prompt
 * when the tokenizer adds BOS itself (tokenizer.ggml.add_bos_token).
 */
#ifndef CV_CHAT_FORMAT_H
#define CV_CHAT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "cv_error.h"
#include "gguf.h"
#include "tokenizer.h"
#include "tool_calls.h"

typedef struct cv_chat_format cv_chat_format;

/* The model's format: the file's template when it has one, else the family its
 * architecture and name imply. When the interpreter refuses the file's template,
 * the built-in family its markers name is used instead (its reason in *note, which
 * may be NULL; note[0] is 0 otherwise); with no such family the refusal is returned.
 * Errors: CV_ENOTFOUND (no template, no family), the parse error (CV_EUNSUPPORTED,
 * CV_EFORMAT, CV_ERANGE: the line and construct named), CV_ENOMEM. */
cv_status cv_chat_format_load(const cv_gguf *g, const cv_tok *tok, cv_chat_format **out, char *note,
                              size_t note_cap, cv_error *err);
/* A built-in family as a format: static, never freed. */
const cv_chat_format *cv_chat_format_family(cv_chat_family f);
/* NULL and built-in formats are fine. */
void cv_chat_format_free(cv_chat_format *f);
/* How the file's template writes tool calls (tool_calls.h); a built-in family takes no
 * tools: CV_TOOL_SYNTAX_NONE. */
cv_tool_syntax cv_chat_format_tool_syntax(const cv_chat_format *f);
/* The forms of that syntax the template writes (CV_TOOL_FORM_* bits). */
unsigned cv_chat_format_tool_forms(const cv_chat_format *f);
/* "jinja" for a file's template, else the family's name. */
const char *cv_chat_format_name(const cv_chat_format *f);

typedef struct cv_chat_opts {
    bool add_generation_prompt;
    const char *tools; /* a JSON array (OpenAI's tools), the template's `tools`; NULL: none */
    const char *extra; /* a JSON object of more template variables ({"enable_thinking": false}); NULL: none */
} cv_chat_opts;

/* The prompt for msgs (cv_chat_msg's tool fields are for Jinja templates; a built-in
 * family refuses them and tools). CV_EINVAL for a request the template refuses
 * (raise_exception, a role order, bad JSON: the field named), CV_EUNSUPPORTED for a
 * construct the interpreter lacks, CV_ERANGE past its bounds. */
cv_status cv_chat_format_apply(const cv_chat_format *f, const cv_chat_msg *msgs, size_t n,
                               const cv_chat_opts *o, cv_chat_prompt *out, cv_error *err);
/* The checks a caller wants before other work, cheap enough for an event thread: a
 * built-in family's (roles and their order); for a file's template the fields only
 * (an empty chat, a missing role or content, tool calls or tools that are not JSON),
 * since its own checks (raise_exception) run when it renders. */
cv_status cv_chat_format_check(const cv_chat_format *f, const cv_chat_msg *msgs, size_t n,
                               const cv_chat_opts *o, cv_error *err);
/* The prompt ids for msgs (see cv_chat_encode): control tokens only from the
 * template's text. flags: CV_TOK_ADD_SPECIAL or 0. *ids is malloc'd. */
cv_status cv_chat_format_encode(const cv_tok *tok, const cv_chat_format *f, const cv_chat_msg *msgs,
                                size_t n, const cv_chat_opts *o, unsigned flags, int32_t **ids,
                                size_t *n_ids, cv_error *err);

#endif
