/* chat_template: turns chat messages into a model's prompt text.
 *
 * The formats of the supported families are written out in C, each following the
 * model's published Jinja template (see chat_template.c): no Jinja engine runs. A
 * family is detected from the GGUF's tokenizer.chat_template by markers that only
 * that family's template contains; when the file has no template, from its
 * architecture and name; or it is forced by name. An unrecognised template is an
 * error, never a guess.
 *
 * The prompt leaves out the leading BOS token that every one of these templates
 * starts with: the tokenizer adds it (tokenizer.ggml.add_bos_token), as llama.cpp
 * does. Later special tokens (<s> between llama2 turns, <|im_start|>, ...) are in
 * the text, so the prompt must be tokenized with special tokens recognised, but
 * only in the template's own text: the rendered prompt reports where message
 * content lies, and cv_chat_encode tokenizes it so that "<|im_end|>" typed by a
 * user (or found in a retrieved document) stays plain text.
 */
#ifndef CV_CHAT_TEMPLATE_H
#define CV_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "cv_error.h"
#include "gguf.h"      /* cv_str */
#include "tokenizer.h" /* cv_tok_span, cv_chat_encode */

typedef enum cv_chat_family {
    CV_CHAT_LLAMA2,      /* [INST] <<SYS>> ... <</SYS>> ... [/INST] */
    CV_CHAT_LLAMA3,      /* <|start_header_id|>role<|end_header_id|> ... <|eot_id|> */
    CV_CHAT_CHATML,      /* <|im_start|>role ... <|im_end|> */
    CV_CHAT_QWEN2,       /* ChatML with Qwen2.5's default system message */
    CV_CHAT_DEEPSEEK_R1, /* <｜User｜> ... <｜Assistant｜><think> */
    CV_CHAT_GEMMA,       /* <start_of_turn>user ... <end_of_turn>, system folded into user */
} cv_chat_family;

typedef struct cv_chat_msg {
    const char *role;    /* "system", "user" or "assistant" (a Jinja template: any, e.g. "tool") */
    const char *content; /* UTF-8, NUL-terminated */
    /* For Jinja templates (chat_format.h) only, NULL when absent; the families here
     * refuse them: */
    const char *tool_calls;   /* JSON array of the assistant's tool calls (HF form: arguments an object) */
    const char *tool_call_id; /* on a "tool" message: the call it answers */
    const char *name;         /* on a "tool" message: the tool's name */
} cv_chat_msg;

/* "llama2", "llama3", "chatml", "qwen2", "deepseek-r1", "gemma". */
const char *cv_chat_family_name(cv_chat_family f);
/* CV_EINVAL listing the valid names when name is none of them. */
cv_status cv_chat_family_from_name(const char *name, cv_chat_family *out, cv_error *err);

/* tmpl: tokenizer.chat_template ({NULL, 0} when absent); arch and name:
 * general.architecture and general.name, used only when tmpl is absent or empty.
 * CV_EUNSUPPORTED for a template with no known markers, CV_ENOTFOUND when there
 * is no template and the architecture and name do not say. */
cv_status cv_chat_detect(cv_str tmpl, cv_str arch, cv_str name, cv_chat_family *out,
                         cv_error *err);

/* A rendered prompt: the template's text around the messages' content. */
typedef struct cv_chat_prompt {
    char *text;           /* NUL-terminated, malloc'd */
    size_t len;
    cv_tok_span *content; /* where message content (every role's) lies in text, in order */
    size_t n_content;
} cv_chat_prompt;

/* The prompt for msgs, ending with the assistant's header when
 * add_generation_prompt; free it with cv_chat_prompt_free. CV_EINVAL for an empty
 * chat, an unknown role, or an order the family's template rejects (llama2 and
 * gemma: an optional first system message, then user and assistant alternating,
 * starting with user). */
cv_status cv_chat_apply(cv_chat_family f, const cv_chat_msg *msgs, size_t n,
                        bool add_generation_prompt, cv_chat_prompt *out, cv_error *err);
/* Only the checks of cv_chat_apply (nothing rendered), for a caller that wants them
 * before other work. Messages name the request's fields ("messages[2].role: ..."), so
 * pass the messages as the client sent them. */
cv_status cv_chat_check(cv_chat_family f, const cv_chat_msg *msgs, size_t n, cv_error *err);
void cv_chat_prompt_free(cv_chat_prompt *p);

/* A rendered prompt's ids: control tokens parsed only outside p->content (see
 * cv_tok_encode_plain). flags: CV_TOK_ADD_SPECIAL or 0. *ids is malloc'd. */
cv_status cv_chat_prompt_encode(const cv_tok *tok, const cv_chat_prompt *p, unsigned flags, int32_t **ids,
                                size_t *n_ids, cv_error *err);

/* The prompt ids for msgs with the generation prompt, as a chat must be tokenized:
 * the template's control tokens are tokens, text inside any message (the system
 * message and retrieved context included) never is, so content cannot open or
 * close a turn. flags: CV_TOK_ADD_SPECIAL or 0 (control tokens are always parsed
 * in the template's own text). *ids is malloc'd. */
cv_status cv_chat_encode(const cv_tok *tok, cv_chat_family f, const cv_chat_msg *msgs, size_t n,
                         unsigned flags, int32_t **ids, size_t *n_ids, cv_error *err);

/* The text that ends an assistant turn in this family ("<end_of_turn>",
 * "<|eot_id|>", ...): the engine stops on it (as a token or a stop string). */
const char *cv_chat_end_of_turn(cv_chat_family f);

#endif
