/* The archive scan and the bulk payload parse in one pass per line (kernels.py loads this through
 * ctypes; no Python API is used, so no Python headers are needed to build it).
 *
 * Each function takes what its numpy reference takes (lines.scan_numpy, payloads.parse_spans_numpy):
 * the same plain lines with the same columns, bit for bit, and the same values for every payload
 * parsed here. Past its own limits (more than PTK_MAX_VALUES integers in a payload, a shape longer
 * than PTK_SHAPE_BYTES, a batch's 33rd shape in row order where numpy picks by shape length) a
 * payload is left to orjson, which gives the same values. tests/test_kernels.py compares the two on
 * generated and hostile input. The numpy code stays the reference and the fallback.
 */
#include <stdint.h>
#include <string.h>

#define MAX_NUMBER 17
#define EXACT_LIMIT (UINT64_C(1) << 53)
#define MAX_DIGITS 18
#define MARK 0x01
#define PTK_MAX_SHAPES 32    /* payloads.MAX_SHAPES */
#define PTK_SHAPE_BYTES 256  /* a longer shape is left to orjson */
#define PTK_MAX_VALUES 16    /* integers per payload taken here; more are left to orjson */
#define STRINGIFY(x) #x
#define TEXT(x) STRINGIFY(x)
#ifndef PTK_SOURCE
#define PTK_SOURCE unknown /* setup.py defines it: the SHA-256 of this file */
#endif

/* What this build is, for kernels.py to check before it calls anything: its limits and the
 * source it was compiled from (a library left from an older kernels.c is not used). */
const char *ptk_build(void) {
    return "ptk 1 shapes=" TEXT(PTK_MAX_SHAPES) " shape_bytes=" TEXT(PTK_SHAPE_BYTES) " values=" TEXT(PTK_MAX_VALUES)
           " source=" TEXT(PTK_SOURCE);
}

static const double POW10[MAX_NUMBER + 1] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17};

/* Lines as lines.scan splits data: at each newline, the last one without it unless data ends
 * with a newline (so empty data is one empty line). */
int64_t ptk_count_lines(const uint8_t *data, int64_t n) {
    int64_t lines = 0;
    const uint8_t *p = data, *end = data + n;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return (n > 0 && data[n - 1] == '\n') ? lines : lines + 1;
}

static int printable(const uint8_t *p, const uint8_t *end) {
    uint8_t outside = 0;
    for (; p < end; p++) outside |= (uint8_t)(*p - 0x20) >= 0x5F;
    return !outside;
}

/* The receive time at [p, end): a JSON decimal of at most 17 characters, digits and at most one
 * point (not first, not last), no leading zero, its digits as an integer at most 2**53. Returns the
 * byte after it, or NULL when it is not such a number. */
static const uint8_t *number(const uint8_t *p, const uint8_t *end, double *value) {
    const uint8_t *start = p;
    uint64_t mantissa = 0;
    int points = 0, fraction = 0;
    while (p < end && (*p == '.' || (uint8_t)(*p - '0') <= 9)) {
        if (p - start == MAX_NUMBER) return NULL;
        if (*p == '.') {
            points++;
        } else {
            mantissa = mantissa * 10 + (uint64_t)(*p - '0');
            fraction += points > 0;
        }
        p++;
    }
    int64_t length = p - start;
    if (length < 1 || points > 1 || *start == '.' || p[-1] == '.') return NULL;
    if (*start == '0' && length > 1 && start[1] != '.') return NULL;
    if (mantissa > EXACT_LIMIT) return NULL;
    *value = (double)mantissa / POW10[fraction];
    return p;
}

/* Whether the line [s, e) is plain (lines.py's module doc); its columns when it is. */
static int plain_line(const uint8_t *s, const uint8_t *e, double time_limit, double *t, const uint8_t **topic,
                      const uint8_t **topic_end, const uint8_t **payload, const uint8_t **payload_end, int64_t *chars) {
    static const char head[] = "{\"t\":", topic_key[] = ",\"topic\":\"", payload_key[] = "\",\"payload\":\"";
    if (e - s < 31 || !printable(s, e) || memcmp(s, head, 5) != 0) return 0;
    const uint8_t *p = number(s + 5, e, t);
    if (p == NULL || !(*t < time_limit) || e - p < 10 || memcmp(p, topic_key, 10) != 0) return 0;
    *topic = p += 10;
    if (p < e && *p == '$') return 0; /* $ptmon/ records: the reader's per-line path */
    while (p < e && *p != '"') {
        if (*p == '\\') return 0; /* no escape in a topic */
        p++;
    }
    *topic_end = p;
    if (e - p < 13 || memcmp(p, payload_key, 13) != 0) return 0;
    *payload = p += 13;
    int64_t escapes = 0;
    while (p < e && *p != '"') {
        if (*p == '\\') {
            if (p + 1 >= e || p[1] != '"') return 0; /* only \" */
            escapes++;
            p += 2;
        } else {
            p++;
        }
    }
    if (p != e - 2 || e[-1] != '}') return 0;
    *payload_end = p;
    *chars = (p - *payload) - escapes;
    return 1;
}

/* Split data (n bytes) into its lines (count: ptk_count_lines(data, n)), each's start and end (the
 * newline excluded), and take the plain ones' columns, in order, at most room of them (the
 * caller's bound: a plain line takes 31 bytes and its newline); returns how many are plain. A
 * receive time must be below time_limit (the end of the months ptmon serves). */
int64_t ptk_scan(const uint8_t *data, int64_t n, int64_t count, double time_limit, int64_t room, int64_t *starts,
                 int64_t *ends, uint8_t *plain, double *t, int64_t *topic_start, int64_t *topic_end,
                 int64_t *payload_start, int64_t *payload_end, int64_t *payload_chars) {
    int64_t taken = 0;
    const uint8_t *p = data, *end = data + n;
    for (int64_t line = 0; line < count; line++) {
        const uint8_t *newline = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *e = newline ? newline : end;
        const uint8_t *ts, *te, *ps, *pe;
        int64_t chars;
        double time;
        starts[line] = p - data;
        ends[line] = e - data;
        plain[line] = taken < room && plain_line(p, e, time_limit, &time, &ts, &te, &ps, &pe, &chars);
        if (plain[line]) {
            t[taken] = time;
            topic_start[taken] = ts - data;
            topic_end[taken] = te - data;
            payload_start[taken] = ps - data;
            payload_end[taken] = pe - data;
            payload_chars[taken] = chars;
            taken++;
        }
        if (newline == NULL) break;
        p = newline + 1;
    }
    return taken;
}

/* A run of digits and '-' at [p, end) as payloads._values reads it: a JSON integer of at most 18
 * digits ('-' only first, no leading zero). Returns 0 when the run is no such integer. */
static int integer(const uint8_t *p, const uint8_t *end, int64_t *value) {
    int negative = *p == '-';
    const uint8_t *first = p + negative;
    int64_t digits = end - first, v = 0;
    if (digits < 1 || digits > MAX_DIGITS) return 0;
    if (digits > 1 && *first == '0') return 0;
    for (const uint8_t *q = first; q < end; q++) {
        if (*q == '-') return 0;
        v = v * 10 + (*q - '0');
    }
    *value = negative ? -v : v;
    return 1;
}

static int same(const uint8_t *shape_bytes, const int32_t *shape_length, const uint64_t *hashes, int32_t k,
                const uint8_t *shape, int32_t length, uint64_t hash) {
    return hashes[k] == hash && shape_length[k] == length &&
           memcmp(shape_bytes + (int64_t)k * PTK_SHAPE_BYTES, shape, (size_t)length) == 0;
}

/* Parse the payloads at buf[starts[i]:ends[i]] as payloads.parse_spans does: each maximal run of
 * digits and '-' an integer, the rest of the payload its shape (each run a MARK byte). shape_of[i]
 * is the payload's shape in the table (shape_bytes, PTK_SHAPE_BYTES apart, of shape_length), -1 when
 * it is left to orjson (a byte outside the grammar, a run that is no integer, a shape too long, too
 * many values, or no room for another shape); values[i * PTK_MAX_VALUES + k] its k-th integer. The
 * caller checks each shape against the grammar. ``escaped``: the payloads are archive string bodies
 * (a backslash is then allowed: only \" is left by the reader). Returns the number of shapes. */
int32_t ptk_parse(const uint8_t *buf, const int64_t *starts, const int64_t *ends, int64_t n, int32_t escaped,
                  int32_t *shape_of, int64_t *values, uint8_t *shape_bytes, int32_t *shape_length) {
    uint8_t shape[PTK_SHAPE_BYTES];
    uint64_t hashes[PTK_MAX_SHAPES];
    int32_t count = 0, last = -1;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = buf + starts[i], *end = buf + ends[i];
        int64_t *row = values + i * PTK_MAX_VALUES;
        int32_t length = 0, runs = 0, slow = 0;
        uint64_t hash = 0xcbf29ce484222325u;
        while (p < end) {
            uint8_t c = *p;
            if ((c < 0x20 && c != 0x09 && c != 0x0A && c != 0x0D) || c == 0x7F || (c == '\\' && !escaped)) {
                slow = 1;
                break;
            }
            if (c == '-' || (uint8_t)(c - '0') <= 9) {
                const uint8_t *run = p;
                while (p < end && (*p == '-' || (uint8_t)(*p - '0') <= 9)) p++;
                if (runs == PTK_MAX_VALUES || !integer(run, p, &row[runs])) {
                    slow = 1;
                    break;
                }
                runs++;
                c = MARK;
            } else {
                p++;
            }
            if (length == PTK_SHAPE_BYTES) {
                slow = 1;
                break;
            }
            shape[length++] = c;
            hash = (hash ^ c) * 0x100000001b3u;
        }
        int32_t found = -1;
        if (!slow) {
            if (last >= 0 && same(shape_bytes, shape_length, hashes, last, shape, length, hash)) {
                found = last;
            } else {
                for (int32_t k = 0; k < count && found < 0; k++)
                    if (same(shape_bytes, shape_length, hashes, k, shape, length, hash)) found = k;
                if (found < 0 && count < PTK_MAX_SHAPES) {
                    found = count++;
                    memcpy(shape_bytes + (int64_t)found * PTK_SHAPE_BYTES, shape, (size_t)length);
                    shape_length[found] = length;
                    hashes[found] = hash;
                }
            }
            last = found;
        }
        shape_of[i] = found;
    }
    return count;
}
