/* pii: masks personal data in text before it leaves the process (outbound queries,
 * audit entries, logs).
 *
 * Built-in detectors, all on ASCII digits/letters inside arbitrary UTF-8 text:
 *   CN_ID  mainland resident ID: 17 digits + digit/X, known province code, plausible
 *          birth date (1900..2099, real day of month), ISO 7064 mod 11-2 check char;
 *   PHONE  mainland mobile 1[3-9]XXXXXXXXX, optional +86/0086/86/(+86) prefix,
 *          optional 3-4-4 groups separated by one space or '-';
 *   EMAIL  local@domain.tld (ASCII local part, dotted domain, alphabetic TLD >= 2);
 *   CARD   bank card, 13..19 digits, plain or in 4-digit groups, Luhn-valid.
 * A number is only matched as a whole digit run: never inside a longer run of digits.
 * Extra patterns (POSIX extended regex, byte-oriented) are masked as "[NAME]".
 *
 * Masking styles (decided here, documented for operators):
 *   CV_PII_PLACEHOLDER (default, for anything outbound): the match becomes a typed
 *     placeholder "[CN_ID]", "[PHONE]", "[EMAIL]", "[CARD]";
 *   CV_PII_PARTIAL (for logs read by people): the usual Chinese partial masks:
 *     ID 110***********123X, phone 138****5678, card ************1234 (separators
 *     kept), e-mail a***@example.com. Extra patterns always use the placeholder.
 * Overlapping matches: the earliest wins, then the longest.
 */
#ifndef CV_PII_H
#define CV_PII_H

#include <stddef.h>

#include "cv_error.h"

typedef enum cv_pii_style { CV_PII_PLACEHOLDER = 0, CV_PII_PARTIAL = 1 } cv_pii_style;

typedef struct cv_pii cv_pii;

cv_status cv_pii_create(cv_pii_style style, cv_pii **out, cv_error *err);
void cv_pii_free(cv_pii *p);

/* Adds a pattern masked as "[name]". name: 1..32 chars of [A-Z0-9_]. */
cv_status cv_pii_add_pattern(cv_pii *p, const char *name, const char *regex, cv_error *err);

/* Masks text[0..len) into a new NUL-terminated string (*out, free()). *n_masked, when
 * not NULL, receives how many spans were masked. text may contain NUL bytes only if
 * no extra pattern is set (regexec stops at NUL). */
cv_status cv_pii_mask(const cv_pii *p, const char *text, size_t len, char **out,
                      size_t *n_masked, cv_error *err);

/* Exposed for tests and other validators. */
int cv_pii_luhn_ok(const char *digits, size_t n);
int cv_pii_cn_id_ok(const char *s18);

#endif
