// A small, strict JSON parser (RFC 8259) for the C example handlers: the whole document into
// a tree, with the same verdicts as the JSON parsers of the Rust, Python and JavaScript
// examples (no NaN/Infinity, no trailing commas, no leading zeros, UTF-8 only, depth <= 128).
#ifndef WASMQ_EXAMPLE_JSON_H
#define WASMQ_EXAMPLE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  JSON_NULL,
  JSON_FALSE,
  JSON_TRUE,
  JSON_NUMBER,
  JSON_STRING,
  JSON_ARRAY,
  JSON_OBJECT,
} json_kind;

typedef struct json_value {
  json_kind kind;
  // JSON_NUMBER: the value, correctly rounded to a double (as JavaScript holds it).
  double number;
  // JSON_STRING: the decoded text, UTF-8, NUL-terminated (it may also contain NULs).
  char *string;
  size_t string_len;
  // JSON_ARRAY: `count` values. JSON_OBJECT: `count` members, as key (a JSON_STRING) and
  // value, alternating, so `items` holds 2 * count values.
  struct json_value *items;
  size_t count;
} json_value;

// Parses `len` bytes of `text` into `out`. On failure returns false and writes a message
// ("unexpected character 'x' at byte 3") into `err`.
bool json_parse(const uint8_t *text, size_t len, json_value *out, char *err, size_t err_len);

// The value of member `key` of an object, or NULL (also when `obj` is not an object). With
// duplicate keys the last one wins, as in JavaScript, Python and serde_json.
const json_value *json_get(const json_value *obj, const char *key);

void json_free(json_value *value);

#endif
