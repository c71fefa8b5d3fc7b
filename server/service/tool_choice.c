#include "tool_choice.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_schema.h"

static cv_status refuse(cv_tool_plan *p, cv_error *err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static cv_status refuse(cv_tool_plan *p, cv_error *err, const char *param, const char *fmt, ...) {
    snprintf(p->param, sizeof p->param, "%s", param);
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cv_errorf(err, CV_EINVAL, "%s: %s", param, msg);
}

/* Every tool's shape; *named: the tool whose name is function (NULL when absent). */
static cv_status check_tools(const json_t *tools, const char *function, const json_t **named, cv_tool_plan *p,
                             cv_error *err) {
    if (!json_is_array(tools)) return refuse(p, err, "tools", "expected an array");
    *named = NULL;
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t) {
        char param[64];
        snprintf(param, sizeof param, "tools[%zu]", i);
        if (!json_is_object(t)) return refuse(p, err, param, "expected an object");
        const json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
        if (type && !(json_is_string(type) && strcmp(json_string_value(type), "function") == 0))
            return refuse(p, err, param, "type: only \"function\" tools are supported");
        snprintf(param, sizeof param, "tools[%zu].function", i);
        if (!json_is_object(fn)) return refuse(p, err, param, "required (an object)");
        const json_t *name = json_object_get(fn, "name"), *params = json_object_get(fn, "parameters");
        snprintf(param, sizeof param, "tools[%zu].function.name", i);
        if (!json_is_string(name) || json_string_length(name) == 0)
            return refuse(p, err, param, "required (a non-empty string)");
        snprintf(param, sizeof param, "tools[%zu].function.parameters", i);
        if (params && !json_is_null(params) && !json_is_object(params))
            return refuse(p, err, param, "expected an object (a JSON schema)");
        if (function && strcmp(json_string_value(name), function) == 0) *named = t;
    }
    return CV_OK;
}

/* ---- the constraint of a required call ---- */

/* s as the inside of a GBNF string literal. */
static void gbnf_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if (*s == '\n') fputs("\\n", f);
        else fputc(*s, f);
    }
}

#define DS_CALLS_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALLS_END "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_CALL_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALL_END "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_SEP "<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>"

/* How one syntax form writes its calls, as GBNF: root ::= open call (join call)* close
 * and callI ::= head NAME mid argsI tail, NAME a literal of the name (as a JSON string
 * when json_name). Markers that are control tokens are token terminals (<"...">), so
 * the model writes them as the tokens themselves. */
typedef struct call_form {
    const char *open, *join, *close, *head, *mid, *tail;
    int json_name;
} call_form;

static const call_form forms[] = {
    /* hermes */
    {"", "\"\\n\"", "", "\"<tool_call>\\n{\\\"name\\\": \"", "\", \\\"arguments\\\": \"", "\"}\\n</tool_call>\"", 1},
    /* llama3 */
    {"", "\"; \"", "", "\"{\\\"name\\\": \"", "\", \\\"parameters\\\": \"", "\"}\"", 1},
    /* mistral v3 */
    {"<\"[TOOL_CALLS]\"> \"[\"", "\", \"", "\"]\"", "\"{\\\"name\\\": \"", "\", \\\"arguments\\\": \"", "\"}\"", 1},
    /* mistral with [ARGS] (Small 3.2, Devstral) */
    {"", "", "", "<\"[TOOL_CALLS]\">", "<\"[ARGS]\">", "", 0},
    /* deepseek V3 / R1 */
    {"<\"" DS_CALLS_BEGIN "\">", "\"\\n\"", "<\"" DS_CALLS_END "\">", "<\"" DS_CALL_BEGIN "\"> \"function\" <\"" DS_SEP "\">",
     "\"\\n```json\\n\"", "\"\\n```\" <\"" DS_CALL_END "\">", 0},
    /* deepseek V3.1 */
    {"<\"" DS_CALLS_BEGIN "\">", "", "<\"" DS_CALLS_END "\">", "<\"" DS_CALL_BEGIN "\">", "<\"" DS_SEP "\">",
     "<\"" DS_CALL_END "\">", 0},
};

static const call_form *form_of(cv_tool_syntax syn, unsigned tf) {
    switch (syn) {
    case CV_TOOL_SYNTAX_HERMES: return &forms[0];
    case CV_TOOL_SYNTAX_LLAMA3: return &forms[1];
    case CV_TOOL_SYNTAX_MISTRAL: return &forms[tf & CV_TOOL_FORM_ARGS_MARKER ? 3 : 2];
    case CV_TOOL_SYNTAX_DEEPSEEK: return &forms[tf & CV_TOOL_FORM_FENCED ? 4 : 5];
    default: return NULL;
    }
}

/* The GBNF of the syntax's calls of tools (checked): rule callI per tool with its
 * parameters' schema as rule argsI. */
static cv_status call_grammar(const json_t *tools, const call_form *fm, int parallel, cv_tool_plan *p, cv_error *err) {
    size_t len;
    FILE *f = open_memstream(&p->grammar, &len);
    if (!f) return cv_errorf(err, CV_ENOMEM, "tools: out of memory");
    fprintf(f, "root ::= %s call", fm->open);
    if (parallel) fprintf(f, " (%s call)*", fm->join);
    fprintf(f, " %s\ncall ::= ", fm->close);
    for (size_t i = 0; i < json_array_size(tools); i++) fprintf(f, "%scall%zu", i ? " | " : "", i);
    fputc('\n', f);
    cv_status st = CV_OK;
    json_t *any = json_pack("{s:s}", "type", "object");
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t) {
        const json_t *fn = json_object_get(t, "function"), *params = json_object_get(fn, "parameters");
        const json_t *jname = json_object_get(fn, "name");
        char rule[32], *name = fm->json_name ? json_dumps(jname, JSON_ENCODE_ANY) : strdup(json_string_value(jname));
        char *schema = NULL;
        snprintf(rule, sizeof rule, "args%zu", i);
        cv_error e = {0};
        if (!name || !any) st = cv_errorf(err, CV_ENOMEM, "tools: out of memory");
        else if ((st = cv_json_schema_gbnf(params && !json_is_null(params) ? params : any, rule, &schema, &e)) != CV_OK) {
            char param[64];
            snprintf(param, sizeof param, "tools[%zu].function.parameters", i);
            st = st == CV_ENOMEM ? cv_errorf(err, CV_ENOMEM, "tools: out of memory")
                                 : refuse(p, err, param, "a required call is held to this schema: %s", e.msg);
        } else {
            fprintf(f, "call%zu ::= %s \"", i, fm->head);
            gbnf_text(f, name);
            fprintf(f, "\" %s %s %s\n%s\n", fm->mid, rule, fm->tail, schema);
        }
        free(name);
        free(schema);
        if (st != CV_OK) break;
    }
    json_decref(any);
    if (fclose(f) != 0 && st == CV_OK) st = cv_errorf(err, CV_ENOMEM, "tools: out of memory");
    if (st != CV_OK) {
        free(p->grammar);
        p->grammar = NULL;
    }
    return st;
}

cv_status cv_tool_plan_make(const cv_chat_format *fmt, const char *tools, const char *choice, const char *function,
                            int parallel, cv_tool_plan *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    if (!choice || !*choice) choice = "auto";
    if (function && !*function) function = NULL;
    int none = strcmp(choice, "none") == 0, required = strcmp(choice, "required") == 0;
    if (!none && !required && strcmp(choice, "auto") != 0)
        return refuse(out, err, "tool_choice", "'%.32s' is none of auto, none, required", choice);
    if (function && none) return refuse(out, err, "tool_choice", "none with a function named");
    int have = tools && *tools;
    if (!have) {
        if (required || function) return refuse(out, err, "tool_choice", "a tool is required but there are no tools");
        return CV_OK;
    }
    json_error_t je;
    json_t *doc = json_loads(tools, 0, &je);
    if (!doc) return refuse(out, err, "tools", "not JSON: %s", je.text);
    const json_t *named = NULL;
    cv_status st = check_tools(doc, function, &named, out, err);
    if (st == CV_OK && function && !named)
        st = refuse(out, err, "tool_choice", "no tool named '%.64s' in tools", function);
    if (st != CV_OK || none) goto out;
    out->syntax = cv_chat_format_tool_syntax(fmt);
    if ((required || function) && out->syntax == CV_TOOL_SYNTAX_NONE) {
        st = refuse(out, err, "tool_choice",
                    "this model's template writes tool calls in no syntax corvid parses (hermes, llama3, mistral, "
                    "deepseek)");
        goto out;
    }
    out->max_calls = parallel ? 0 : 1;
    out->required = required || function;
    json_t *given = named ? json_pack("[O]", named) : json_incref(doc);
    out->template_tools = given ? json_dumps(given, JSON_COMPACT) : NULL;
    if (function) out->function = strdup(function);
    if (!out->template_tools || (function && !out->function)) st = cv_errorf(err, CV_ENOMEM, "tools: out of memory");
    else if (out->required)
        st = call_grammar(given, form_of(out->syntax, cv_chat_format_tool_forms(fmt)), parallel, out, err);
    json_decref(given);
out:
    json_decref(doc);
    return st;
}

void cv_tool_plan_free(cv_tool_plan *p) {
    free(p->template_tools);
    free(p->function);
    free(p->grammar);
    p->template_tools = p->function = p->grammar = NULL;
}
