/* json_schema: a JSON schema (untrusted, from a request) compiled to GBNF text
 * (grammar.h) whose sentences are exactly compact-or-indented JSON texts that validate
 * against the schema.
 *
 * The subset: type (one or a list: object, array, string, number, integer, boolean,
 * null), properties (emitted in the schema's order; required ones always, the others
 * optional), required, additionalProperties (false; or, without properties, a schema
 * for the values of a map; otherwise no undeclared property is generated, which every
 * value of it allows), enum, const, items, minItems, maxItems, anyOf, pattern (a simple
 * regex: literals, escapes, classes with ranges and \d \w \s, ., groups, |, * + ? {m,n},
 * ^ and $ at the ends), minLength and maxLength, format (date, time, date-time, uuid),
 * $ref to "#", "#/$defs/...", "#/definitions/..." or another local JSON pointer
 * (recursion allowed), and the annotations title, description, examples, default,
 * $schema, $id, $comment. `true` and `{}` are any JSON value; {"type": "object"} is any
 * JSON object (response_format json_object).
 *
 * The text returned always compiles (cv_grammar_parse); a schema whose $ref reaches
 * itself without any text between is refused. Anything else is refused with CV_EINVAL naming the keyword and where it is as a JSON
 * pointer ("json_schema: minimum at /properties/age is not supported"). Bounded work:
 * at most CV_JSON_SCHEMA_MAX_NODES subschemas, nesting CV_JSON_SCHEMA_MAX_DEPTH,
 * repetition counts CV_GRAMMAR_MAX_REPEAT, and the text CV_GRAMMAR_MAX_TEXT bytes
 * (CV_ERANGE beyond them).
 *
 * Whitespace: at most 20 of space, tab and newline after { [ , : and before } ], so
 * pretty-printed JSON is allowed but a model cannot loop on whitespace forever.
 */
#ifndef CV_JSON_SCHEMA_H
#define CV_JSON_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

#include "cv_error.h"

#define CV_JSON_SCHEMA_MAX_NODES 10000
#define CV_JSON_SCHEMA_MAX_DEPTH 64

/* GBNF for schema, malloc'd into *gbnf. The schema's rule is named root_name (NULL:
 * "root"), every helper rule starts with root_name and "-", so a caller can embed it
 * in a grammar of its own (a tool call's wrapper) with its own root rule. root_name
 * must be a GBNF name ([a-zA-Z0-9_-]+). */
cv_status cv_json_schema_gbnf(const json_t *schema, const char *root_name, char **gbnf, cv_error *err);

/* The same for a schema given as JSON text (gRPC's SamplingParams.json_schema);
 * malformed JSON is CV_EINVAL naming the line and column. */
cv_status cv_json_schema_gbnf_text(const char *json, size_t len, const char *root_name, char **gbnf,
                                   cv_error *err);

#endif
