#include "tool_choice.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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
    json_t *given = doc;
    if (named) given = json_pack("[O]", named);
    out->template_tools = given ? json_dumps(given, JSON_COMPACT) : NULL;
    if (given != doc) json_decref(given);
    if (function) out->function = strdup(function);
    if (!out->template_tools || (function && !out->function)) st = cv_errorf(err, CV_ENOMEM, "tools: out of memory");
out:
    json_decref(doc);
    return st;
}

void cv_tool_plan_free(cv_tool_plan *p) {
    free(p->template_tools);
    free(p->function);
    p->template_tools = p->function = NULL;
}
