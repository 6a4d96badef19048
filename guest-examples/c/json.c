// A small, strict JSON parser: see json.h.
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// serde_json's limit; Python and JavaScript reject far deeper documents anyway.
#define MAX_DEPTH 128

typedef struct {
  const uint8_t *text;
  size_t len;
  size_t pos;
  char *err;
  size_t err_len;
} parser;

static bool fail(parser *p, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  int n = vsnprintf(p->err, p->err_len, fmt, args);
  va_end(args);
  if (n >= 0 && (size_t)n < p->err_len) {
    snprintf(p->err + n, p->err_len - (size_t)n, " at byte %zu", p->pos);
  }
  return false;
}

static bool unexpected(parser *p) {
  if (p->pos >= p->len) {
    return fail(p, "unexpected end of input");
  }
  uint8_t c = p->text[p->pos];
  if (c >= 0x20 && c < 0x7f) {
    return fail(p, "unexpected character '%c'", c);
  }
  return fail(p, "unexpected byte 0x%02x", c);
}

static void skip_whitespace(parser *p) {
  while (p->pos < p->len) {
    uint8_t c = p->text[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      break;
    }
    p->pos++;
  }
}

static bool literal(parser *p, const char *word) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0) {
    return unexpected(p);
  }
  p->pos += n;
  return true;
}

static bool is_digit(parser *p) {
  return p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9';
}

static bool parse_number(parser *p, json_value *out) {
  size_t start = p->pos;
  if (p->pos < p->len && p->text[p->pos] == '-') {
    p->pos++;
  }
  if (!is_digit(p)) {
    return unexpected(p);
  }
  if (p->text[p->pos] == '0') {
    p->pos++;
    if (is_digit(p)) {
      return fail(p, "leading zero in a number");
    }
  } else {
    while (is_digit(p)) {
      p->pos++;
    }
  }
  if (p->pos < p->len && p->text[p->pos] == '.') {
    p->pos++;
    if (!is_digit(p)) {
      return unexpected(p);
    }
    while (is_digit(p)) {
      p->pos++;
    }
  }
  if (p->pos < p->len && (p->text[p->pos] == 'e' || p->text[p->pos] == 'E')) {
    p->pos++;
    if (p->pos < p->len && (p->text[p->pos] == '+' || p->text[p->pos] == '-')) {
      p->pos++;
    }
    if (!is_digit(p)) {
      return unexpected(p);
    }
    while (is_digit(p)) {
      p->pos++;
    }
  }
  size_t n = p->pos - start;
  char *token = malloc(n + 1);
  if (token == NULL) {
    return fail(p, "out of memory");
  }
  memcpy(token, p->text + start, n);
  token[n] = '\0';
  out->kind = JSON_NUMBER;
  out->number = strtod(token, NULL);
  free(token);
  return true;
}

typedef struct {
  char *data;
  size_t len;
  size_t cap;
} buffer;

static bool push(buffer *b, const void *bytes, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 32;
    while (cap < b->len + n + 1) {
      cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (data == NULL) {
      return false;
    }
    b->data = data;
    b->cap = cap;
  }
  memcpy(b->data + b->len, bytes, n);
  b->len += n;
  b->data[b->len] = '\0';
  return true;
}

static bool push_code_point(buffer *b, uint32_t cp) {
  uint8_t out[4];
  size_t n;
  if (cp < 0x80) {
    out[0] = (uint8_t)cp;
    n = 1;
  } else if (cp < 0x800) {
    out[0] = (uint8_t)(0xc0 | (cp >> 6));
    out[1] = (uint8_t)(0x80 | (cp & 0x3f));
    n = 2;
  } else if (cp < 0x10000) {
    out[0] = (uint8_t)(0xe0 | (cp >> 12));
    out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (uint8_t)(0x80 | (cp & 0x3f));
    n = 3;
  } else {
    out[0] = (uint8_t)(0xf0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    n = 4;
  }
  return push(b, out, n);
}

static bool hex4(parser *p, uint32_t *out) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    if (p->pos >= p->len) {
      return unexpected(p);
    }
    uint8_t c = p->text[p->pos];
    if (c >= '0' && c <= '9') {
      v = v * 16 + (uint32_t)(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v = v * 16 + (uint32_t)(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      v = v * 16 + (uint32_t)(c - 'A' + 10);
    } else {
      return fail(p, "invalid \\u escape");
    }
    p->pos++;
  }
  *out = v;
  return true;
}

// Length of the valid UTF-8 sequence at the parser's position, or 0.
static size_t utf8_sequence(parser *p) {
  const uint8_t *s = p->text + p->pos;
  size_t left = p->len - p->pos;
  uint8_t c = s[0];
  size_t n;
  uint32_t min;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, min = 0x80, cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3, min = 0x800, cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (left < n) {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) {
      return 0;
    }
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  return n;
}

static bool parse_string(parser *p, json_value *out) {
  buffer b = {0};
  p->pos++;  // the opening quote
  for (;;) {
    if (p->pos >= p->len) {
      free(b.data);
      return fail(p, "unterminated string");
    }
    uint8_t c = p->text[p->pos];
    bool ok = true;
    if (c == '"') {
      p->pos++;
      break;
    } else if (c < 0x20) {
      free(b.data);
      return fail(p, "control character in a string");
    } else if (c == '\\') {
      p->pos++;
      if (p->pos >= p->len) {
        free(b.data);
        return unexpected(p);
      }
      uint8_t e = p->text[p->pos++];
      const char *simple = NULL;
      switch (e) {
        case '"': simple = "\""; break;
        case '\\': simple = "\\"; break;
        case '/': simple = "/"; break;
        case 'b': simple = "\b"; break;
        case 'f': simple = "\f"; break;
        case 'n': simple = "\n"; break;
        case 'r': simple = "\r"; break;
        case 't': simple = "\t"; break;
        case 'u': break;
        default:
          p->pos--;
          free(b.data);
          return fail(p, "invalid escape");
      }
      if (simple != NULL) {
        ok = push(&b, simple, 1);
      } else {
        uint32_t cp;
        if (!hex4(p, &cp)) {
          free(b.data);
          return false;
        }
        // A surrogate pair is one code point; a lone surrogate is kept as it is (as
        // JavaScript and Python keep it).
        if (cp >= 0xd800 && cp <= 0xdbff && p->len - p->pos >= 6 && p->text[p->pos] == '\\' &&
            p->text[p->pos + 1] == 'u') {
          size_t save = p->pos;
          uint32_t low;
          p->pos += 2;
          if (hex4(p, &low) && low >= 0xdc00 && low <= 0xdfff) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          } else {
            p->pos = save;
          }
        }
        ok = push_code_point(&b, cp);
      }
    } else if (c < 0x80) {
      ok = push(&b, &c, 1);
      p->pos++;
    } else {
      size_t n = utf8_sequence(p);
      if (n == 0) {
        free(b.data);
        return fail(p, "invalid UTF-8");
      }
      ok = push(&b, p->text + p->pos, n);
      p->pos += n;
    }
    if (!ok) {
      free(b.data);
      return fail(p, "out of memory");
    }
  }
  if (b.data == NULL && !push(&b, "", 0)) {
    return fail(p, "out of memory");
  }
  out->kind = JSON_STRING;
  out->string = b.data;
  out->string_len = b.len;
  return true;
}

static bool parse_value(parser *p, json_value *out, int depth);

// Appends a zeroed slot to `v->items` and returns it, or NULL when out of memory.
static json_value *append(json_value *v, size_t *cap, size_t used) {
  if (used == *cap) {
    size_t next = *cap ? *cap * 2 : 8;
    json_value *items = realloc(v->items, next * sizeof *items);
    if (items == NULL) {
      return NULL;
    }
    v->items = items;
    *cap = next;
  }
  memset(&v->items[used], 0, sizeof v->items[used]);
  return &v->items[used];
}

static bool parse_container(parser *p, json_value *out, int depth) {
  bool object = p->text[p->pos] == '{';
  uint8_t close = object ? '}' : ']';
  if (depth >= MAX_DEPTH) {
    return fail(p, "nested too deeply");
  }
  out->kind = object ? JSON_OBJECT : JSON_ARRAY;
  p->pos++;
  skip_whitespace(p);
  if (p->pos < p->len && p->text[p->pos] == close) {
    p->pos++;
    return true;
  }
  size_t cap = 0;
  size_t used = 0;
  for (;;) {
    if (object) {
      skip_whitespace(p);
      if (p->pos >= p->len || p->text[p->pos] != '"') {
        return unexpected(p);
      }
      json_value *key = append(out, &cap, used);
      if (key == NULL) {
        return fail(p, "out of memory");
      }
      used++;
      if (!parse_string(p, key)) {
        return false;
      }
      skip_whitespace(p);
      if (p->pos >= p->len || p->text[p->pos] != ':') {
        return unexpected(p);
      }
      p->pos++;
    }
    json_value *item = append(out, &cap, used);
    if (item == NULL) {
      return fail(p, "out of memory");
    }
    used++;
    out->count = object ? used / 2 : used;
    if (!parse_value(p, item, depth + 1)) {
      return false;
    }
    skip_whitespace(p);
    if (p->pos < p->len && p->text[p->pos] == ',') {
      p->pos++;
      continue;
    }
    if (p->pos < p->len && p->text[p->pos] == close) {
      p->pos++;
      return true;
    }
    return unexpected(p);
  }
}

static bool parse_value(parser *p, json_value *out, int depth) {
  skip_whitespace(p);
  if (p->pos >= p->len) {
    return unexpected(p);
  }
  switch (p->text[p->pos]) {
    case '{':
    case '[':
      return parse_container(p, out, depth);
    case '"':
      return parse_string(p, out);
    case 't':
      out->kind = JSON_TRUE;
      return literal(p, "true");
    case 'f':
      out->kind = JSON_FALSE;
      return literal(p, "false");
    case 'n':
      out->kind = JSON_NULL;
      return literal(p, "null");
    default:
      return parse_number(p, out);
  }
}

bool json_parse(const uint8_t *text, size_t len, json_value *out, char *err, size_t err_len) {
  parser p = {.text = text, .len = len, .pos = 0, .err = err, .err_len = err_len};
  memset(out, 0, sizeof *out);
  bool ok = parse_value(&p, out, 0);
  if (ok) {
    skip_whitespace(&p);
    if (p.pos < p.len) {
      ok = fail(&p, "trailing characters");
    }
  }
  if (!ok) {
    json_free(out);
  }
  return ok;
}

const json_value *json_get(const json_value *obj, const char *key) {
  if (obj == NULL || obj->kind != JSON_OBJECT) {
    return NULL;
  }
  size_t key_len = strlen(key);
  const json_value *found = NULL;
  for (size_t i = 0; i < obj->count; i++) {
    const json_value *k = &obj->items[2 * i];
    if (k->string_len == key_len && memcmp(k->string, key, key_len) == 0) {
      found = &obj->items[2 * i + 1];
    }
  }
  return found;
}

void json_free(json_value *value) {
  size_t n = value->kind == JSON_OBJECT ? 2 * value->count : value->count;
  if (value->kind == JSON_ARRAY || value->kind == JSON_OBJECT) {
    for (size_t i = 0; i < n; i++) {
      json_free(&value->items[i]);
    }
  }
  free(value->items);
  free(value->string);
  memset(value, 0, sizeof *value);
}
