/*
 * flowkit._speedups: compiled versions of a few pure-Python functions of flowkit.
 *
 * Built from source by `pip install` when a C compiler is present; when it is not (or
 * when FLOWKIT_NO_EXTENSIONS is set), flowkit uses the pure-Python functions, which
 * compute exactly the same values. The tests compare the two.
 *
 * The functions: a key's group, that is Flink's murmur hash of Java's hashCode of the key,
 * and the form keyed state stores a key in (flowkit/state/key_groups.py); the encoding of
 * record batches for channels (flowkit/serialization.py); the keyed process loop
 * (flowkit/operators/process.py), the keyed reduce loop (flowkit/operators/keyed.py), and
 * the window operator's input and firing loops (flowkit/operators/window.py). Besides, what
 * the pure-Python code leaves to the cyclic collector: these functions untrack the tuples
 * of atoms they make or hand on, and untrack/untrack_atoms do it for Python code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* PyMemberDef on Python 3.11 */
#include <math.h>

/* What the slot writes of the loops need from structmember.h, whose T_ names clash with
 * the codec's tags below (3.12 spells these Py_T_OBJECT_EX and Py_READONLY). */
enum { MEMBER_OBJECT_EX = T_OBJECT_EX, MEMBER_READONLY = READONLY };
#undef T_NONE
#undef T_FLOAT
#undef T_OBJECT_EX
#undef READONLY
#include <stdint.h>

/* Untrack `o` when it is an exact tuple none of whose items the cyclic collector tracks or
 * may track later: such a tuple can never be part of a reference cycle. The collector does
 * the same to each tuple, but only after walking it in a young collection; a job's results
 * kept alive (a CollectSink's values, a batch waiting in a channel) would fill the young
 * generation and be walked again and again. The rule is CPython's own
 * (_PyTuple_MaybeUntrack): an item keeps the tuple tracked if it is a container, unless it
 * is a tuple that is untracked itself. */
static inline void
untrack_if_atomic(PyObject *o)
{
    if (!PyTuple_CheckExact(o) || !PyObject_GC_IsTracked(o)) {
        return;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(o); i++) {
        PyObject *item = PyTuple_GET_ITEM(o, i);
        if (item == NULL ||
            (PyObject_IS_GC(item) && (!PyTuple_CheckExact(item) || PyObject_GC_IsTracked(item)))) {
            return;
        }
    }
    PyObject_GC_UnTrack(o);
}

/* Strings are always ready from Python 3.12 on (and the macro is deprecated there). */
#if PY_VERSION_HEX >= 0x030C0000
#define STR_READY(s) 0
#else
#define STR_READY(s) PyUnicode_READY(s)
#endif

/* Java String.hashCode over the UTF-16 code units of s, as a 32-bit wrap-around value:
 * h = 31 * h + unit. Characters beyond the BMP count as their two surrogate units; a lone
 * surrogate is one unit, as in a Java string. */
static uint32_t
java_str_hash(PyObject *s)
{
    /* s is ready: the callers check STR_READY. */
    const int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    uint32_t h = 0;
    Py_ssize_t i;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *p = (const Py_UCS1 *)data;
        for (i = 0; i < n; i++) {
            h = 31u * h + p[i];
        }
    }
    else if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *p = (const Py_UCS2 *)data;
        for (i = 0; i < n; i++) {
            h = 31u * h + p[i];
        }
    }
    else {
        const Py_UCS4 *p = (const Py_UCS4 *)data;
        for (i = 0; i < n; i++) {
            Py_UCS4 c = p[i];
            if (c > 0xFFFF) {
                c -= 0x10000;
                h = 31u * h + (0xD800u + (c >> 10));
                h = 31u * h + (0xDC00u + (c & 0x3FFu));
            }
            else {
                h = 31u * h + c;
            }
        }
    }
    return h;
}

static inline uint32_t
rotl32(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

/* Flink's MathUtils.murmurHash(int): one murmur3 round and the finalizer; the result as a
 * non-negative Java int (Integer.MIN_VALUE maps to 0). */
static int32_t
murmur(uint32_t code)
{
    code *= 0xCC9E2D51u;
    code = rotl32(code, 15);
    code *= 0x1B873593u;
    code = rotl32(code, 13);
    code = code * 5u + 0xE6546B64u;
    code ^= 4u;
    code ^= code >> 16;
    code *= 0x85EBCA6Bu;
    code ^= code >> 13;
    code *= 0xC2B2AE35u;
    code ^= code >> 16;
    if (code < 0x80000000u) {
        return (int32_t)code;
    }
    return code == 0x80000000u ? 0 : (int32_t)(0x100000000ull - code);
}

/* Integer.hashCode for 32-bit values, Long.hashCode for 64-bit ones; 0 with *fits = 0
 * when the value needs more than 64 bits (BigInteger: left to the Python code). */
static uint32_t
java_int_hash(PyObject *value, int *fits)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow != 0) {
        *fits = 0;
        return 0;
    }
    *fits = 1;
    if (v >= INT32_MIN && v <= INT32_MAX) {
        return (uint32_t)(int32_t)v;
    }
    uint64_t bits = (uint64_t)v;
    return (uint32_t)(bits ^ (bits >> 32));
}

static PyObject *
wrong_type(const char *fname, const char *kind, PyObject *o)
{
    PyErr_Format(PyExc_TypeError, "%s() takes %s, got %.200s", fname, kind,
                 Py_TYPE(o)->tp_name);
    return NULL;
}

/* A max_parallelism argument: an int in [1, 32768], else -1 with an exception set. */
static long
max_parallelism_arg(PyObject *arg)
{
    long mp = PyLong_AsLong(arg);
    if (mp == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (mp < 1 || mp > 32768) {
        PyErr_Format(PyExc_ValueError, "max_parallelism must be between 1 and 32768, got %ld",
                     mp);
        return -1;
    }
    return mp;
}

/* The arguments (key, max_parallelism) of str_key_group and int_key_group: the key must
 * pass `check` (a str or an int), max_parallelism must be in [1, 32768]. */
static int
key_group_args(PyObject *const *args, Py_ssize_t nargs, const char *fname,
               int (*check)(PyObject *), const char *key_kind, long *mp)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes (key, max_parallelism)", fname);
        return -1;
    }
    if (!check(args[0])) {
        wrong_type(fname, key_kind, args[0]);
        return -1;
    }
    *mp = max_parallelism_arg(args[1]);
    return *mp < 0 ? -1 : 0;
}

static int
is_str(PyObject *o)
{
    return PyUnicode_Check(o);
}

static int
is_int(PyObject *o)
{
    return PyLong_Check(o);
}

static PyObject *
speedups_str_hash(PyObject *module, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        return wrong_type("str_hash", "a str", arg);
    }
    if (STR_READY(arg) < 0) {
        return NULL;
    }
    return PyLong_FromLong((int32_t)java_str_hash(arg));
}

static PyObject *
speedups_murmur_hash(PyObject *module, PyObject *arg)
{
    if (!PyLong_Check(arg)) {
        return wrong_type("murmur_hash", "an int", arg);
    }
    /* The low 32 bits of the value, two's complement for negative ones. */
    unsigned long long low = PyLong_AsUnsignedLongLongMask(arg);
    if (low == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromLong(murmur((uint32_t)low));
}

static PyObject *
speedups_str_key_group(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long mp;
    if (key_group_args(args, nargs, "str_key_group", is_str, "a str key", &mp) < 0 ||
        STR_READY(args[0]) < 0) {
        return NULL;
    }
    return PyLong_FromLong(murmur(java_str_hash(args[0])) % mp);
}

static PyObject *
speedups_int_key_group(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long mp;
    int fits = 0;
    if (key_group_args(args, nargs, "int_key_group", is_int, "an int key", &mp) < 0) {
        return NULL;
    }
    uint32_t code = java_int_hash(args[0], &fits);
    if (!fits) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(murmur(code) % mp);
}

/* ------------------------------------------------------------------------------------
 * Record batches (flowkit.serialization, format "flowkit binary").
 *
 * A payload is a varint count followed by that many values. A value is a tag byte and
 * its data:
 *   NONE, FALSE, TRUE            -
 *   INT32 / INT64                4 / 8 bytes, little endian, two's complement
 *   FLOAT                        8 bytes, IEEE 754 little endian (PyFloat_Pack8)
 *   ASCII / UTF8 / BYTES         varint length, the bytes (UTF8: "surrogatepass")
 *   KEY_NEW                      a str dict key the reader remembers: an ASCII or UTF8 value
 *   KEY_REF                      varint index of a remembered key
 *   TUPLE / LIST                 varint length, the items
 *   DICT                         varint length, the keys and values in order
 * Only exact built-in types are written: a subclass, an int beyond 64 bits, anything else
 * or nesting deeper than MAX_DEPTH makes encode_batch return None, and the caller pickles
 * the batch instead. No Python code runs while a batch is written or read.
 * flowkit/serialization.py reads the same format in pure Python.
 * ---------------------------------------------------------------------------------- */

enum {
    T_NONE = 0, T_FALSE = 1, T_TRUE = 2, T_INT32 = 3, T_INT64 = 4, T_FLOAT = 5,
    T_ASCII = 6, T_UTF8 = 7, T_KEY_NEW = 8, T_KEY_REF = 9, T_BYTES = 10,
    T_TUPLE = 11, T_LIST = 12, T_DICT = 13,
};

#define MAX_DEPTH 64
#define MEMO_MAX 64     /* remembered dict keys per batch */
#define MEMO_SLOTS 128  /* open addressing over the keys' addresses; twice MEMO_MAX */

#define UNSUPPORTED 1

typedef struct {
    unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
    int memo_count;
    PyObject *memo_key[MEMO_SLOTS];
    int memo_index[MEMO_SLOTS];
} Encoder;

/* An array of *cap items of item_size bytes at buf, grown (doubled, or to need) to hold
 * need items: the array, moved maybe, with *cap updated; NULL with MemoryError (buf is
 * then unchanged). */
static void *
grow_array(void *buf, Py_ssize_t *cap, Py_ssize_t need, size_t item_size)
{
    if (need <= *cap) {
        return buf;
    }
    Py_ssize_t grown = *cap < 16 ? 16 : 2 * *cap;
    if (grown < need) {
        grown = need;
    }
    void *moved = (size_t)grown > PY_SSIZE_T_MAX / item_size
                      ? NULL
                      : PyMem_Realloc(buf, (size_t)grown * item_size);
    if (moved == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *cap = grown;
    return moved;
}

static int
enc_grow(Encoder *e, Py_ssize_t extra)
{
    unsigned char *buf = grow_array(e->buf, &e->cap, e->len + extra, 1);
    if (buf == NULL) {
        return -1;
    }
    e->buf = buf;
    return 0;
}

#define ENC_RESERVE(e, n)                                  \
    do {                                                   \
        if ((e)->len + (n) > (e)->cap && enc_grow((e), (n)) < 0) { \
            return -1;                                     \
        }                                                  \
    } while (0)

static inline void
put_varint(Encoder *e, size_t v)
{
    while (v >= 0x80) {
        e->buf[e->len++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    e->buf[e->len++] = (unsigned char)v;
}

static inline void
put_le(Encoder *e, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        e->buf[e->len++] = (unsigned char)(v >> (8 * i));
    }
}

/* [tag_prefix] tag varint(n) data[n]; tag_prefix 0 writes none. */
static int
put_sized(Encoder *e, int tag_prefix, int tag, const void *data, Py_ssize_t n)
{
    ENC_RESERVE(e, n + 12);
    if (tag_prefix) {
        e->buf[e->len++] = (unsigned char)tag_prefix;
    }
    e->buf[e->len++] = (unsigned char)tag;
    put_varint(e, (size_t)n);
    memcpy(e->buf + e->len, data, (size_t)n);
    e->len += n;
    return 0;
}

static int
enc_str(Encoder *e, PyObject *o, int tag_prefix)
{
    /* tag_prefix: T_KEY_NEW to mark a remembered dict key, else 0 */
    if (STR_READY(o) < 0) {
        return -1;
    }
    if (PyUnicode_IS_ASCII(o)) {
        return put_sized(e, tag_prefix, T_ASCII, PyUnicode_1BYTE_DATA(o),
                         PyUnicode_GET_LENGTH(o));
    }
    PyObject *utf8 = PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass");
    if (utf8 == NULL) {
        return -1;
    }
    int r = put_sized(e, tag_prefix, T_UTF8, PyBytes_AS_STRING(utf8), PyBytes_GET_SIZE(utf8));
    Py_DECREF(utf8);
    return r;
}

static int enc_value(Encoder *e, PyObject *o, int depth);

static int
enc_dict_key(Encoder *e, PyObject *key, int depth)
{
    if (!PyUnicode_CheckExact(key)) {
        return enc_value(e, key, depth);
    }
    size_t slot = ((size_t)key >> 4) & (MEMO_SLOTS - 1);
    while (e->memo_key[slot] != NULL) {
        if (e->memo_key[slot] == key) {
            ENC_RESERVE(e, 11);
            e->buf[e->len++] = T_KEY_REF;
            put_varint(e, (size_t)e->memo_index[slot]);
            return 0;
        }
        slot = (slot + 1) & (MEMO_SLOTS - 1);
    }
    if (e->memo_count >= MEMO_MAX) {
        return enc_str(e, key, 0);
    }
    e->memo_key[slot] = key; /* borrowed: the batch keeps the key alive while it is written */
    e->memo_index[slot] = e->memo_count++;
    return enc_str(e, key, T_KEY_NEW);
}

static int
enc_value(Encoder *e, PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type) {
        return enc_str(e, o, 0);
    }
    if (t == &PyLong_Type) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow != 0) {
            return UNSUPPORTED;
        }
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        ENC_RESERVE(e, 9);
        if (v >= INT32_MIN && v <= INT32_MAX) {
            e->buf[e->len++] = T_INT32;
            put_le(e, (uint64_t)v, 4);
        }
        else {
            e->buf[e->len++] = T_INT64;
            put_le(e, (uint64_t)v, 8);
        }
        return 0;
    }
    if (t == &PyFloat_Type) {
        ENC_RESERVE(e, 9);
        e->buf[e->len++] = T_FLOAT;
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(o), (char *)e->buf + e->len, 1) < 0) {
            return -1;
        }
        e->len += 8;
        return 0;
    }
    if (o == Py_None || t == &PyBool_Type) {
        ENC_RESERVE(e, 1);
        e->buf[e->len++] = o == Py_None ? T_NONE : (o == Py_True ? T_TRUE : T_FALSE);
        return 0;
    }
    if (depth >= MAX_DEPTH) {
        return UNSUPPORTED;
    }
    if (t == &PyTuple_Type || t == &PyList_Type) {
        Py_ssize_t n = Py_SIZE(o);
        PyObject **items = t == &PyTuple_Type ? ((PyTupleObject *)o)->ob_item
                                              : ((PyListObject *)o)->ob_item;
        ENC_RESERVE(e, 11);
        e->buf[e->len++] = t == &PyTuple_Type ? T_TUPLE : T_LIST;
        put_varint(e, (size_t)n);
        for (Py_ssize_t i = 0; i < n; i++) {
            int r = enc_value(e, items[i], depth + 1);
            if (r != 0) {
                return r;
            }
        }
        return 0;
    }
    if (t == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        ENC_RESERVE(e, 11);
        e->buf[e->len++] = T_DICT;
        put_varint(e, (size_t)PyDict_GET_SIZE(o));
        while (PyDict_Next(o, &pos, &key, &value)) {
            int r = enc_dict_key(e, key, depth + 1);
            if (r != 0) {
                return r;
            }
            r = enc_value(e, value, depth + 1);
            if (r != 0) {
                return r;
            }
        }
        return 0;
    }
    if (t == &PyBytes_Type) {
        return put_sized(e, 0, T_BYTES, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o));
    }
    return UNSUPPORTED;
}

static PyObject *
speedups_encode_batch(PyObject *module, PyObject *values)
{
    if (!PyList_CheckExact(values) && !PyTuple_CheckExact(values)) {
        Py_RETURN_NONE; /* another kind of sequence: the caller's general path */
    }
    Py_ssize_t n = Py_SIZE(values);
    Encoder e;
    e.len = 0;
    e.cap = 64 + n * 24;
    e.memo_count = 0;
    memset(e.memo_key, 0, sizeof(e.memo_key));
    e.buf = PyMem_Malloc((size_t)e.cap);
    if (e.buf == NULL) {
        return PyErr_NoMemory();
    }
    put_varint(&e, (size_t)n);
    PyObject **items = PyList_CheckExact(values) ? ((PyListObject *)values)->ob_item
                                                 : ((PyTupleObject *)values)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = enc_value(&e, items[i], 0);
        if (r != 0) {
            PyMem_Free(e.buf);
            if (r < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)e.buf, e.len);
    PyMem_Free(e.buf);
    return out;
}

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    int memo_count;
    PyObject *memo[MEMO_MAX];
} Decoder;

static PyObject *
corrupt(const char *what)
{
    PyErr_Format(PyExc_ValueError, "corrupt record batch: %s", what);
    return NULL;
}

static int
get_varint(Decoder *d, size_t *out)
{
    size_t v = 0;
    int shift = 0;
    while (d->p < d->end && shift < 64) {
        unsigned char b = *d->p++;
        v |= (size_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
        shift += 7;
    }
    corrupt("truncated length");
    return -1;
}

static int
get_length(Decoder *d, size_t *out)
{
    /* A length or count: never more than the bytes left (every item takes one at least). */
    if (get_varint(d, out) < 0) {
        return -1;
    }
    if (*out > (size_t)(d->end - d->p)) {
        corrupt("a length beyond the end of the payload");
        return -1;
    }
    return 0;
}

static PyObject *dec_value(Decoder *d, int depth);

static PyObject *
dec_str(Decoder *d, unsigned char tag)
{
    size_t n;
    if (get_length(d, &n) < 0) {
        return NULL;
    }
    const char *s = (const char *)d->p;
    d->p += n;
    if (tag == T_UTF8) {
        return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "surrogatepass");
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] > 127) {
            return corrupt("a non-ASCII byte in an ASCII string");
        }
    }
    PyObject *str = PyUnicode_New((Py_ssize_t)n, 127);
    if (str != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(str), s, n);
    }
    return str;
}

static PyObject *
dec_value(Decoder *d, int depth)
{
    if (d->p >= d->end) {
        return corrupt("truncated value");
    }
    unsigned char tag = *d->p++;
    size_t n = 0; /* a container's length */
    if (tag == T_TUPLE || tag == T_LIST || tag == T_DICT) {
        if (depth >= MAX_DEPTH) {
            return corrupt("nested too deeply");
        }
        if (get_length(d, &n) < 0) {
            return NULL;
        }
    }
    switch (tag) {
    case T_NONE:
        Py_RETURN_NONE;
    case T_FALSE:
        Py_RETURN_FALSE;
    case T_TRUE:
        Py_RETURN_TRUE;
    case T_INT32:
    case T_INT64: {
        int width = tag == T_INT32 ? 4 : 8;
        if (d->end - d->p < width) {
            return corrupt("truncated int");
        }
        uint64_t v = 0;
        for (int i = 0; i < width; i++) {
            v |= (uint64_t)d->p[i] << (8 * i);
        }
        d->p += width;
        if (width == 4) {
            return PyLong_FromLong((int32_t)(uint32_t)v);
        }
        return PyLong_FromLongLong((int64_t)v);
    }
    case T_FLOAT: {
        if (d->end - d->p < 8) {
            return corrupt("truncated float");
        }
        double x = PyFloat_Unpack8((const char *)d->p, 1);
        if (x == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        d->p += 8;
        return PyFloat_FromDouble(x);
    }
    case T_ASCII:
    case T_UTF8:
        return dec_str(d, tag);
    case T_KEY_NEW: {
        if (d->p >= d->end || (*d->p != T_ASCII && *d->p != T_UTF8)) {
            return corrupt("a remembered key that is not a str");
        }
        if (d->memo_count >= MEMO_MAX) {
            return corrupt("too many remembered keys");
        }
        unsigned char sub = *d->p++;
        PyObject *key = dec_str(d, sub);
        if (key == NULL) {
            return NULL;
        }
        Py_INCREF(key);
        d->memo[d->memo_count++] = key;
        return key;
    }
    case T_KEY_REF: {
        size_t i;
        if (get_varint(d, &i) < 0) {
            return NULL;
        }
        if (i >= (size_t)d->memo_count) {
            return corrupt("a reference to a key not seen");
        }
        PyObject *key = d->memo[i];
        Py_INCREF(key);
        return key;
    }
    case T_BYTES: {
        if (get_length(d, &n) < 0) {
            return NULL;
        }
        PyObject *b = PyBytes_FromStringAndSize((const char *)d->p, (Py_ssize_t)n);
        d->p += n;
        return b;
    }
    case T_TUPLE:
    case T_LIST: {
        PyObject *seq = tag == T_TUPLE ? PyTuple_New((Py_ssize_t)n) : PyList_New((Py_ssize_t)n);
        if (seq == NULL) {
            return NULL;
        }
        for (size_t i = 0; i < n; i++) {
            PyObject *item = dec_value(d, depth + 1);
            if (item == NULL) {
                Py_DECREF(seq); /* unset items are NULL, which both deallocators skip */
                return NULL;
            }
            if (tag == T_TUPLE) {
                PyTuple_SET_ITEM(seq, (Py_ssize_t)i, item);
            }
            else {
                PyList_SET_ITEM(seq, (Py_ssize_t)i, item);
            }
        }
        untrack_if_atomic(seq);
        return seq;
    }
    case T_DICT: {
        PyObject *dict = PyDict_New();
        if (dict == NULL) {
            return NULL;
        }
        for (size_t i = 0; i < n; i++) {
            PyObject *key = dec_value(d, depth + 1);
            if (key == NULL) {
                Py_DECREF(dict);
                return NULL;
            }
            PyObject *value = dec_value(d, depth + 1);
            if (value == NULL) {
                Py_DECREF(key);
                Py_DECREF(dict);
                return NULL;
            }
            int r = PyDict_SetItem(dict, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (r < 0) {
                Py_DECREF(dict);
                return NULL;
            }
        }
        return dict;
    }
    default:
        return corrupt("an unknown tag");
    }
}

static PyObject *
speedups_decode_batch(PyObject *module, PyObject *payload)
{
    Py_buffer view;
    if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Decoder d;
    d.p = (const unsigned char *)view.buf;
    d.end = d.p + view.len;
    d.memo_count = 0;
    PyObject *out = NULL;
    size_t n;
    if (get_length(&d, &n) == 0) {
        out = PyList_New((Py_ssize_t)n);
        for (size_t i = 0; out != NULL && i < n; i++) {
            PyObject *item = dec_value(&d, 0);
            if (item == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, (Py_ssize_t)i, item);
        }
        if (out != NULL && d.p != d.end) {
            Py_CLEAR(out);
            corrupt("bytes after the last value");
        }
    }
    for (int i = 0; i < d.memo_count; i++) {
        Py_DECREF(d.memo[i]);
    }
    PyBuffer_Release(&view);
    return out;
}

/* ------------------------------------------------------------------------------------
 * The keyed process loop (flowkit/operators/process.py, _run_keyed): for each record its
 * key and key group, the current key set on the state backend and the context, the
 * user's function called, and what it returned or yielded gathered. The Python function
 * _run_keyed is the reference; the two do the same steps in the same order.
 * ---------------------------------------------------------------------------------- */

static PyObject *str_current_key, *str_current_key_group, *str_key, *str_ts, *str_record;
static PyObject *str_window;

static int
intern_names(void)
{
    if (str_record != NULL) {
        return 0;
    }
    str_current_key = PyUnicode_InternFromString("current_key");
    str_current_key_group = PyUnicode_InternFromString("current_key_group");
    str_key = PyUnicode_InternFromString("_key");
    str_ts = PyUnicode_InternFromString("_ts");
    str_window = PyUnicode_InternFromString("_window");
    str_record = PyUnicode_InternFromString("_record");
    if (!str_current_key || !str_current_key_group || !str_key || !str_ts || !str_window ||
        !str_record) {
        return -1;
    }
    return 0;
}

/* An attribute the loops set on every record or key (the backend's current key and key
 * group, the context's key and timestamp). When the object's type keeps it in a
 * __slots__ entry and sets attributes the ordinary way (no __setattr__ of its own), the
 * loop writes that slot directly: PyObject_SetAttr would look the name up in the type
 * and go through the descriptor each time. Looked up once per call of a loop; `type`
 * guards every write (should a finalizer run by a write change the object's class, the
 * rest go through PyObject_SetAttr). */
typedef struct {
    PyObject *obj;
    PyObject *name;
    PyTypeObject *type; /* NULL: no slot, set through PyObject_SetAttr */
    Py_ssize_t offset;
} FastAttr;

/* The offset of the object slot (a __slots__ entry; with `writable`, one that is not
 * read-only) `name` of instances of `t`, or -1 when the attribute is something else. */
static Py_ssize_t
slot_offset(PyTypeObject *t, PyObject *name, int writable)
{
    PyObject *descr = _PyType_Lookup(t, name); /* borrowed; assigns t a version tag */
    if (descr != NULL && Py_TYPE(descr) == &PyMemberDescr_Type) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        int read_only = (member->flags & MEMBER_READONLY) != 0;
        if (member->type == MEMBER_OBJECT_EX && !(writable && read_only)) {
            return member->offset;
        }
    }
    return -1;
}

static void
fast_attr_init(FastAttr *a, PyObject *obj, PyObject *name)
{
    a->obj = obj;
    a->name = name;
    a->type = NULL;
    a->offset = 0;
    if (Py_TYPE(obj)->tp_setattro != PyObject_GenericSetAttr) {
        return;
    }
    Py_ssize_t offset = slot_offset(Py_TYPE(obj), name, 1);
    if (offset >= 0) {
        a->type = Py_TYPE(obj);
        a->offset = offset;
    }
}

static inline int
fast_attr_set(FastAttr *a, PyObject *value)
{
    if (a->type == NULL || Py_TYPE(a->obj) != a->type) {
        return PyObject_SetAttr(a->obj, a->name, value);
    }
    PyObject **slot = (PyObject **)((char *)a->obj + a->offset);
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

/* Whether `o` is of an exact built-in type that is never a side output's tag (whose
 * isinstance check would otherwise look its __class__ up on every result). */
static inline int
is_builtin_atom(PyObject *o)
{
    return PyUnicode_CheckExact(o) || PyLong_CheckExact(o) || PyFloat_CheckExact(o) ||
           PyTuple_CheckExact(o) || PyBytes_CheckExact(o) || o == Py_None;
}

/* Walk what a user function returned (any iterable): a (tag, value) pair whose tag is a
 * tag_class goes to side(tag, value, ts), anything else is appended to out (and ts to
 * stamps when has_ts). */
static int
gather(PyObject *result, PyObject *ts, int has_ts, PyObject *out, PyObject *stamps,
       PyObject *side, PyObject *tag_class)
{
    PyObject *it = PyObject_GetIter(result);
    if (it == NULL) {
        return -1;
    }
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int is_side = 0;
        if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2 &&
            !is_builtin_atom(PyTuple_GET_ITEM(item, 0))) {
            is_side = PyObject_IsInstance(PyTuple_GET_ITEM(item, 0), tag_class);
            if (is_side < 0) {
                Py_DECREF(item);
                Py_DECREF(it);
                return -1;
            }
        }
        int r;
        if (is_side) {
            PyObject *args[3] = {PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1), ts};
            PyObject *done = PyObject_Vectorcall(side, args, 3, NULL);
            r = done == NULL ? -1 : 0;
            Py_XDECREF(done);
        }
        else {
            untrack_if_atomic(item);
            r = PyList_Append(out, item);
            if (r == 0 && has_ts) {
                r = PyList_Append(stamps, ts);
            }
        }
        Py_DECREF(item);
        if (r < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

/* The key group of `key` (for a str key and an int key of at most 64 bits computed here,
 * as str_key_group and int_key_group do with max_parallelism; else group_of(key)). New
 * reference, NULL on error. */
static PyObject *
group_of_key(PyObject *key, long max_parallelism, PyObject *group_of)
{
    /* Computed, not looked up: hashing a str or an int costs less than a dict lookup that
     * misses the CPU caches, which one over many keys does. An int beyond 64 bits is left
     * to group_of (BigInteger's hash). */
    int computed = 0;
    uint32_t code = 0;
    if (PyUnicode_CheckExact(key)) {
        if (STR_READY(key) < 0) {
            return NULL;
        }
        code = java_str_hash(key);
        computed = 1;
    }
    else if (PyLong_CheckExact(key)) {
        code = java_int_hash(key, &computed);
    }
    if (computed) {
        return PyLong_FromLong((long)murmur(code) % max_parallelism);
    }
    return PyObject_CallOneArg(group_of, key);
}

/* The key of `value` (key_of(value), through `normalize` unless it is an exact str, or an
 * exact int when ints_are_final) and its key group (for a str key and an int key of at
 * most 64 bits computed here, as str_key_group and int_key_group do with
 * max_parallelism; else group_of(key)): the first steps of the keyed loops. New
 * references in *key and *group; -1 with both NULL on an error. */
static int
key_and_group(PyObject *value, PyObject *key_of, PyObject *normalize, int ints_are_final,
              long max_parallelism, PyObject *group_of, PyObject **key, PyObject **group)
{
    *group = NULL;
    *key = PyObject_CallOneArg(key_of, value);
    if (*key == NULL) {
        return -1;
    }
    if (!PyUnicode_CheckExact(*key) && !(ints_are_final && PyLong_CheckExact(*key))) {
        Py_SETREF(*key, PyObject_CallOneArg(normalize, *key));
        if (*key == NULL) {
            return -1;
        }
    }
    *group = group_of_key(*key, max_parallelism, group_of);
    if (*group == NULL) {
        Py_CLEAR(*key);
        return -1;
    }
    return 0;
}

static PyObject *
speedups_run_keyed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "run_keyed() takes 15 arguments");
        return NULL;
    }
    PyObject *values = args[0], *timestamps = args[1], *key_selector = args[2];
    PyObject *group_of = args[4], *normalize = args[5];
    PyObject *backend = args[6], *ctx = args[7], *fn = args[8], *out = args[9];
    PyObject *stamps = args[10], *add = args[11], *side = args[12], *tag_class = args[13];
    PyObject *generator_type = args[14];
    int has_ts = timestamps != Py_None;
    if (!PyList_CheckExact(values) || (has_ts && !PyList_CheckExact(timestamps)) ||
        !PyList_CheckExact(out) || !PyList_CheckExact(stamps)) {
        PyErr_SetString(PyExc_TypeError, "run_keyed(): values, timestamps, out and stamps "
                                         "must be lists");
        return NULL;
    }
    const long max_parallelism = max_parallelism_arg(args[3]);
    if (max_parallelism < 0) {
        return NULL;
    }
    if (intern_names() < 0) {
        return NULL;
    }
    FastAttr backend_key, backend_group, ctx_key, ctx_ts;
    fast_attr_init(&backend_key, backend, str_current_key);
    fast_attr_init(&backend_group, backend, str_current_key_group);
    fast_attr_init(&ctx_key, ctx, str_key);
    fast_attr_init(&ctx_ts, ctx, str_ts);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        if (has_ts && i >= PyList_GET_SIZE(timestamps)) {
            break; /* zip() stops at the shorter one */
        }
        PyObject *value = PyList_GET_ITEM(values, i);
        PyObject *ts = has_ts ? PyList_GET_ITEM(timestamps, i) : Py_None;
        Py_INCREF(value);
        Py_INCREF(ts);
        PyObject *key = NULL, *group = NULL, *result = NULL;
        if (key_and_group(value, key_selector, normalize, 1, max_parallelism, group_of, &key,
                          &group) < 0) {
            goto fail;
        }
        if (fast_attr_set(&backend_key, key) < 0 || fast_attr_set(&backend_group, group) < 0 ||
            fast_attr_set(&ctx_key, key) < 0 || fast_attr_set(&ctx_ts, ts) < 0) {
            goto fail;
        }
        {
            PyObject *call_args[2] = {value, ctx};
            result = PyObject_Vectorcall(fn, call_args, 2, NULL);
        }
        if (result == NULL) {
            goto fail;
        }
        if (result != Py_None) {
            if (Py_TYPE(result) == (PyTypeObject *)generator_type || PyList_CheckExact(result)) {
                if (gather(result, ts, has_ts, out, stamps, side, tag_class) < 0) {
                    goto fail;
                }
            }
            else {
                PyObject *add_args[2] = {result, ts};
                PyObject *done = PyObject_Vectorcall(add, add_args, 2, NULL);
                if (done == NULL) {
                    goto fail;
                }
                Py_DECREF(done);
            }
        }
        Py_DECREF(result);
        Py_DECREF(group);
        Py_DECREF(key);
        Py_DECREF(ts);
        Py_DECREF(value);
        continue;
    fail:
        Py_XDECREF(result);
        Py_XDECREF(group);
        Py_XDECREF(key);
        Py_DECREF(ts);
        {
            /* ctx._record = value, keeping the exception that is being raised */
            PyObject *type, *exc, *tb;
            PyErr_Fetch(&type, &exc, &tb);
            if (PyObject_SetAttr(ctx, str_record, value) < 0) {
                PyErr_Clear();
            }
            PyErr_Restore(type, exc, tb);
        }
        Py_DECREF(value);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------
 * The keyed reduce loop (flowkit/operators/keyed.py, KeyedReduceOperator.process_batch,
 * its general and its pair-sum forms): the same steps as the Python loops, in order.
 * ---------------------------------------------------------------------------------- */

static PyObject *
speedups_reduce_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "reduce_batch() takes 7 arguments");
        return NULL;
    }
    PyObject *values = args[0], *key_of = args[1], *accs = args[2], *reduce = args[3];
    PyObject *canonical = args[4], *out = args[5];
    int pair_sum = PyObject_IsTrue(args[6]);
    if (pair_sum < 0) {
        return NULL;
    }
    if (!PyList_CheckExact(values) || !PyDict_CheckExact(accs) || !PyList_CheckExact(out)) {
        PyErr_SetString(PyExc_TypeError,
                        "reduce_batch(): values and out must be lists and accs a dict");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        Py_INCREF(value);
        PyObject *key = PyObject_CallOneArg(key_of, value);
        if (key == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        if (!PyUnicode_CheckExact(key) && !PyLong_CheckExact(key)) {
            /* the form state stores the key in: exact type, every NaN one key */
            PyObject *normal = PyObject_CallOneArg(canonical, key);
            Py_SETREF(key, normal);
        }
        PyObject *acc = key == NULL ? NULL : PyDict_GetItemWithError(accs, key); /* borrowed */
        if (key == NULL || (acc == NULL && PyErr_Occurred())) {
            Py_XDECREF(key);
            Py_DECREF(value);
            return NULL;
        }
        if (acc != NULL) {
            PyObject *result;
            Py_INCREF(acc);
            if (pair_sum && PyTuple_CheckExact(acc) && PyTuple_CheckExact(value) &&
                PyTuple_GET_SIZE(acc) == 2) {
                PyObject *second = PySequence_GetItem(value, 1);
                PyObject *sum = second == NULL ? NULL : PyNumber_Add(PyTuple_GET_ITEM(acc, 1), second);
                Py_XDECREF(second);
                result = sum == NULL ? NULL : PyTuple_Pack(2, PyTuple_GET_ITEM(acc, 0), sum);
                Py_XDECREF(sum);
            }
            else {
                PyObject *call_args[2] = {acc, value};
                result = PyObject_Vectorcall(reduce, call_args, 2, NULL);
            }
            Py_DECREF(acc);
            Py_SETREF(value, result);
            if (value == NULL) {
                Py_DECREF(key);
                return NULL;
            }
        }
        untrack_if_atomic(value);
        int r = PyDict_SetItem(accs, key, value);
        Py_DECREF(key);
        if (r == 0) {
            r = PyList_Append(out, value);
        }
        Py_DECREF(value);
        if (r < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------
 * The form keyed state stores a key in (flowkit/state/key_groups.py, state_key and
 * CanonicalKeys.canonical): plain keys as they are, others through a cache or `slow`.
 * ---------------------------------------------------------------------------------- */

/* Whether `key` is plain (state_key in flowkit/state/key_groups.py): exact str, int,
 * bytes, None, floats that are neither whole numbers nor NaN, and exact tuples of such
 * keys (nested up to a small depth; deeper ones go the slow way). */
static int
is_plain_key(PyObject *key, int depth)
{
    if (PyUnicode_CheckExact(key) || PyLong_CheckExact(key) || PyBytes_CheckExact(key) ||
        key == Py_None) {
        return 1;
    }
    if (PyFloat_CheckExact(key)) {
        const double v = PyFloat_AS_DOUBLE(key);
        return v == v && (isinf(v) || floor(v) != v);
    }
    if (!PyTuple_CheckExact(key) || depth > 8) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(key); i++) {
        if (!is_plain_key(PyTuple_GET_ITEM(key, i), depth + 1)) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
speedups_state_key(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "state_key() takes 3 arguments");
        return NULL;
    }
    PyObject *by_class = args[0], *slow = args[1], *key = args[2];
    if (!PyDict_CheckExact(by_class)) {
        PyErr_SetString(PyExc_TypeError, "state_key(): by_class must be a dict");
        return NULL;
    }
    if (is_plain_key(key, 0)) {
        return Py_NewRef(key);
    }
    PyObject *cache = PyDict_GetItemWithError(by_class, (PyObject *)Py_TYPE(key)); /* borrowed */
    if (cache != NULL && PyDict_CheckExact(cache)) {
        PyObject *found = PyDict_GetItemWithError(cache, key); /* borrowed */
        if (found != NULL) {
            return Py_NewRef(found);
        }
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                return NULL;
            }
            PyErr_Clear(); /* unhashable: the slow way says so */
        }
    }
    else if (cache == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return PyObject_CallOneArg(slow, key);
}

/* ------------------------------------------------------------------------------------
 * The window operator's input loop (flowkit/operators/window.py,
 * WindowOperator._process_batch_fast): the same steps as the Python loop, in order, for
 * each record and each window the assigner gives it (start down by slide).
 * ---------------------------------------------------------------------------------- */

/* The int64 value of an exact int, or 0 with *ok = 0 when it is not one or too big. */
static int64_t
exact_int64(PyObject *o, int *ok)
{
    if (!PyLong_CheckExact(o)) {
        *ok = 0;
        return 0;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *ok = 0;
        return 0;
    }
    *ok = 1;
    return (int64_t)v;
}

/* Python's a % b (b > 0): never negative. */
static int64_t
py_mod(int64_t a, int64_t b)
{
    int64_t r = a % b;
    return r < 0 ? r + b : r;
}

/* The slot of window `start` (its contents dict, or what else window_for gave):
 * slots[start], made by window_for(start) when missing. New reference, NULL on error. */
static PyObject *
window_slot(PyObject *slots, PyObject *window_for, int64_t start)
{
    PyObject *start_obj = PyLong_FromLongLong(start);
    if (start_obj == NULL) {
        return NULL;
    }
    PyObject *slot = PyDict_GetItemWithError(slots, start_obj); /* borrowed */
    if (slot != NULL) {
        Py_INCREF(slot);
    }
    else if (!PyErr_Occurred()) {
        slot = PyObject_CallOneArg(window_for, start_obj);
        if (slot != NULL && PyDict_SetItem(slots, start_obj, slot) < 0) {
            Py_CLEAR(slot);
        }
    }
    Py_DECREF(start_obj);
    return slot;
}

/* Add `value` under `key` to a contents dict, as kind says (0: aggregate, 1: reduce,
 * 2: list of elements). */
static int
window_add_to_dict(PyObject *entries, PyObject *key, PyObject *value, int kind,
                   PyObject *fn, PyObject *create)
{
    PyObject *acc = PyDict_GetItemWithError(entries, key); /* borrowed */
    if (acc == NULL && PyErr_Occurred()) {
        return -1;
    }
    PyObject *result;
    if (kind == 0) {
        PyObject *start = acc;
        if (start == NULL) {
            start = PyObject_CallNoArgs(create);
            if (start == NULL) {
                return -1;
            }
        }
        else {
            Py_INCREF(start);
        }
        PyObject *args[2] = {value, start};
        result = PyObject_Vectorcall(fn, args, 2, NULL);
        Py_DECREF(start);
    }
    else if (kind == 1) {
        if (acc == NULL) {
            result = Py_NewRef(value);
        }
        else {
            Py_INCREF(acc);
            PyObject *args[2] = {acc, value};
            result = PyObject_Vectorcall(fn, args, 2, NULL);
            Py_DECREF(acc);
        }
    }
    else if (acc == NULL) {
        result = PyList_New(1);
        if (result != NULL) {
            PyList_SET_ITEM(result, 0, Py_NewRef(value));
        }
    }
    else {
        int r;
        Py_INCREF(acc);
        if (PyList_Check(acc)) {
            r = PyList_Append(acc, value);
        }
        else {
            PyObject *done = PyObject_CallMethod(acc, "append", "O", value);
            r = done == NULL ? -1 : 0;
            Py_XDECREF(done);
        }
        Py_DECREF(acc);
        return r;
    }
    if (result == NULL) {
        return -1;
    }
    /* an accumulator of atoms then leaves the window's dict untracked too */
    untrack_if_atomic(result);
    int r = PyDict_SetItem(entries, key, result);
    Py_DECREF(result);
    return r;
}

/* a - b into *out; 0 when it does not fit 64 bits. */
static int
sub_fits(int64_t a, int64_t b, int64_t *out)
{
    if ((b > 0 && a < INT64_MIN + b) || (b < 0 && a > INT64_MAX + b)) {
        return 0;
    }
    *out = a - b;
    return 1;
}

/* ts + lateness <= watermark, exactly (as with Python's ints). */
static int
is_late(int64_t ts, int64_t lateness, int64_t watermark)
{
    if (lateness > 0 && ts > INT64_MAX - lateness) {
        return 0; /* the sum is beyond any watermark */
    }
    if (lateness < 0 && ts < INT64_MIN - lateness) {
        return 1;
    }
    return ts + lateness <= watermark;
}

static PyObject *
speedups_window_add(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 23) {
        PyErr_SetString(PyExc_TypeError, "window_add() takes 23 arguments");
        return NULL;
    }
    PyObject *values = args[0], *timestamps = args[1], *key_of = args[2];
    PyObject *canonical = args[3], *key_group_of = args[5], *not_owned = args[8];
    PyObject *slots = args[9], *window_for = args[10];
    PyObject *add_other = args[11], *late = args[12], *late_marker = args[13];
    PyObject *fn = args[20], *create = args[21], *at = args[22];
    const Py_ssize_t kg_low = PyNumber_AsSsize_t(args[6], PyExc_OverflowError);
    if (kg_low == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const Py_ssize_t kg_high = PyNumber_AsSsize_t(args[7], PyExc_OverflowError);
    if (kg_high == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int ok = 1, ok_all = 1;
    const int64_t size = exact_int64(args[14], &ok);
    ok_all &= ok;
    const int64_t slide = exact_int64(args[15], &ok);
    ok_all &= ok;
    const int64_t offset = exact_int64(args[16], &ok);
    ok_all &= ok;
    const int64_t lateness = exact_int64(args[17], &ok);
    ok_all &= ok;
    const int64_t watermark = exact_int64(args[18], &ok);
    ok_all &= ok;
    const long kind = PyLong_AsLong(args[19]);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_CheckExact(values) || !PyList_CheckExact(timestamps) ||
        !PyDict_CheckExact(slots) || !PyList_CheckExact(at) || PyList_GET_SIZE(at) != 1) {
        PyErr_SetString(PyExc_TypeError, "window_add(): values, timestamps and at must be "
                                         "lists (at of one item), slots a dict");
        return NULL;
    }
    const long max_parallelism = max_parallelism_arg(args[4]);
    if (max_parallelism < 0) {
        return NULL;
    }
    const Py_ssize_t n = Py_MIN(PyList_GET_SIZE(values), PyList_GET_SIZE(timestamps));
    if (!ok_all || size <= 0 || slide <= 0) {
        return PyLong_FromLong(0); /* not a case for this loop: the Python one takes it */
    }
    int64_t slot_start = 0;
    PyObject *slot = NULL; /* the slot of window slot_start, owned */
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        PyObject *ts_obj = PyList_GET_ITEM(timestamps, i);
        int64_t ts = exact_int64(ts_obj, &ok);
        int64_t shifted, start, low;
        if (!ok || !sub_fits(ts, offset, &shifted) ||
            !sub_fits(ts, py_mod(shifted, slide), &start) || !sub_fits(ts, size, &low)) {
            break; /* no timestamp, or windows beyond 64 bits: the Python loop goes on */
        }
        Py_INCREF(value);
        Py_INCREF(ts_obj);
        PyObject *key = NULL, *group = NULL;
        /* canonical: the exact-type form of keys other than str and int, one NaN */
        if (key_and_group(value, key_of, canonical, 1, max_parallelism, key_group_of, &key,
                          &group) < 0) {
            goto fail;
        }
        const Py_ssize_t kg = PyNumber_AsSsize_t(group, PyExc_IndexError);
        if (kg == -1 && PyErr_Occurred()) {
            goto fail;
        }
        if (kg < kg_low || kg > kg_high) {
            /* not_owned(key, group) raises the backend's error */
            PyObject *owned_args[2] = {key, group};
            PyObject *done = PyObject_Vectorcall(not_owned, owned_args, 2, NULL);
            Py_XDECREF(done);
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError, "key group %zd is not owned here", kg);
            }
            goto fail;
        }
        int skipped = 1;
        while (start > low) {
            if (slot == NULL || start != slot_start) {
                Py_XDECREF(slot);
                slot = window_slot(slots, window_for, start);
                slot_start = start;
                if (slot == NULL) {
                    goto fail;
                }
            }
            PyObject *entries = slot; /* the slot keeps it alive */
            Py_INCREF(entries);
            int r = 0;
            if (PyDict_CheckExact(entries)) {
                skipped = 0;
                r = window_add_to_dict(entries, key, value, (int)kind, fn, create);
            }
            else if (entries != late_marker) {
                skipped = 0;
                PyObject *other_args[3] = {entries, key, value};
                PyObject *done = PyObject_Vectorcall(add_other, other_args, 3, NULL);
                r = done == NULL ? -1 : 0;
                Py_XDECREF(done);
            }
            Py_DECREF(entries);
            if (r < 0) {
                goto fail;
            }
            if (start < INT64_MIN + slide) {
                break;
            }
            start -= slide;
        }
        if (skipped && is_late(ts, lateness, watermark)) {
            PyObject *late_args[2] = {value, ts_obj};
            PyObject *done = PyObject_Vectorcall(late, late_args, 2, NULL);
            if (done == NULL) {
                goto fail;
            }
            Py_DECREF(done);
        }
        Py_DECREF(group);
        Py_DECREF(key);
        Py_DECREF(ts_obj);
        Py_DECREF(value);
        continue;
    fail:
        Py_XDECREF(group);
        Py_XDECREF(key);
        Py_DECREF(ts_obj);
        Py_DECREF(value);
        Py_XDECREF(slot);
        {
            /* at[0] = i, keeping the exception that is being raised */
            PyObject *type, *exc, *tb;
            PyErr_Fetch(&type, &exc, &tb);
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_SetItem(at, 0, index) < 0) {
                PyErr_Clear();
            }
            PyErr_Restore(type, exc, tb);
        }
        return NULL;
    }
    Py_XDECREF(slot);
    return PyLong_FromSsize_t(i);
}

/* out_t.extend([max_ts] * (len(out_v) - *count)); *count = len(out_v) */
static int
stamp_outputs(PyObject *out_v, PyObject *out_t, PyObject *max_ts, Py_ssize_t *count)
{
    for (Py_ssize_t k = *count; k < PyList_GET_SIZE(out_v); k++) {
        if (PyList_Append(out_t, max_ts) < 0) {
            return -1;
        }
    }
    *count = PyList_GET_SIZE(out_v);
    return 0;
}

/* split_by_key_group(entries, max_parallelism, group_of): {key group: {key: value}} of a
 * dict's entries, in their order (KeyedTable.put_namespace). */
static PyObject *
speedups_split_by_key_group(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "split_by_key_group() takes 3 or 4 arguments");
        return NULL;
    }
    PyObject *entries = args[0], *group_of = args[2];
    int by_first = 0;
    if (nargs == 4 && (by_first = PyObject_IsTrue(args[3])) < 0) {
        return NULL;
    }
    if (!PyDict_Check(entries)) {
        return wrong_type("split_by_key_group", "a dict", entries);
    }
    const long max_parallelism = max_parallelism_arg(args[1]);
    if (max_parallelism < 0) {
        return NULL;
    }
    PyObject *split = PyDict_New();
    if (split == NULL) {
        return NULL;
    }
    Py_INCREF(entries); /* group_of may run Python code */
    const Py_ssize_t size = PyDict_GET_SIZE(entries);
    Py_ssize_t pos = 0;
    PyObject *key, *value; /* borrowed */
    while (PyDict_Next(entries, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        int r = -1;
        PyObject *group = NULL;
        if (!by_first) {
            group = group_of_key(key, max_parallelism, group_of);
        }
        else if (PyTuple_CheckExact(key) && PyTuple_GET_SIZE(key) > 0) {
            group = group_of_key(PyTuple_GET_ITEM(key, 0), max_parallelism, group_of);
        }
        else {
            wrong_type("split_by_key_group", "a non-empty tuple (by_first)", key);
        }
        if (group != NULL) {
            PyObject *part = PyDict_GetItemWithError(split, group); /* borrowed */
            if (part == NULL && !PyErr_Occurred()) {
                part = PyDict_New();
                if (part != NULL) {
                    r = PyDict_SetItem(split, group, part);
                    Py_DECREF(part); /* split holds it */
                    if (r < 0) {
                        part = NULL;
                    }
                }
            }
            r = part == NULL ? -1 : PyDict_SetItem(part, key, value);
            Py_DECREF(group);
        }
        Py_DECREF(value);
        Py_DECREF(key);
        if (r == 0 && PyDict_GET_SIZE(entries) != size) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            r = -1;
        }
        if (r < 0) {
            Py_DECREF(entries);
            Py_DECREF(split);
            return NULL;
        }
    }
    Py_DECREF(entries);
    return split;
}

/* The window operator's firing loop (WindowOperator._fire_entries): evaluate the window
 * for every key of its contents dict, in the same steps. */
static PyObject *
speedups_window_fire(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 18) {
        PyErr_SetString(PyExc_TypeError, "window_fire() takes 18 arguments");
        return NULL;
    }
    PyObject *entries = args[0], *backend = args[1], *set_key = args[2], *call = args[3];
    PyObject *second = args[4], *get_result = args[6], *clear = args[7];
    PyObject *window = args[8], *ctx = args[9], *out_v = args[10], *out_t = args[11];
    PyObject *max_ts = args[12], *side = args[13], *tag_class = args[14];
    PyObject *exact_key_type = args[15], *group_of = args[17];
    const long kind = PyLong_AsLong(args[5]);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const long max_parallelism = max_parallelism_arg(args[16]);
    if (max_parallelism < 0) {
        return NULL;
    }
    if (!PyDict_Check(entries) || !PyList_CheckExact(out_v) || !PyList_CheckExact(out_t)) {
        PyErr_SetString(PyExc_TypeError,
                        "window_fire(): entries must be a dict, out_v and out_t lists");
        return NULL;
    }
    if (intern_names() < 0) {
        return NULL;
    }
    FastAttr backend_key, backend_group;
    fast_attr_init(&backend_key, backend, str_current_key);
    fast_attr_init(&backend_group, backend, str_current_key_group);
    Py_ssize_t count = PyList_GET_SIZE(out_v);
    Py_INCREF(entries); /* kept alive while functions run */
    {
        const Py_ssize_t size = PyDict_GET_SIZE(entries);
        Py_ssize_t pos = 0;
        PyObject *key, *acc; /* borrowed from entries */
        while (PyDict_Next(entries, &pos, &key, &acc)) {
            Py_INCREF(key);
            Py_INCREF(acc);
            PyObject *done = NULL, *results = NULL;
            int r = -1;
            if (set_key == Py_None) {
                PyObject *group = group_of_key(key, max_parallelism, group_of);
                if (group == NULL) {
                    goto next;
                }
                r = fast_attr_set(&backend_group, group);
                Py_DECREF(group);
                if (r < 0 || fast_attr_set(&backend_key, key) < 0) {
                    r = -1;
                    goto next;
                }
                r = -1;
            }
            else {
                done = PyObject_CallOneArg(set_key, key);
                if (done == NULL) {
                    goto next;
                }
                Py_CLEAR(done);
            }
            if (call == Py_None) {
                PyObject *result = kind == 0 ? PyObject_CallOneArg(get_result, acc)
                                             : Py_NewRef(acc);
                if (result == NULL) {
                    goto next;
                }
                untrack_if_atomic(result);
                r = PyList_Append(out_v, result);
                Py_DECREF(result);
                if (r < 0) {
                    goto next;
                }
            }
            else {
                PyObject *user_key = key;
                if ((PyObject *)Py_TYPE(key) == exact_key_type && PyTuple_GET_SIZE(key) == 2) {
                    user_key = PyTuple_GET_ITEM(key, 0); /* functions see the key itself */
                }
                PyObject *elements;
                if (kind == 0) {
                    PyObject *result = PyObject_CallOneArg(get_result, acc);
                    elements = result == NULL ? NULL : PyList_New(1);
                    if (elements != NULL) {
                        PyList_SET_ITEM(elements, 0, result);
                    }
                    else {
                        Py_XDECREF(result);
                    }
                }
                else if (kind == 1) {
                    elements = PyList_New(1);
                    if (elements != NULL) {
                        PyList_SET_ITEM(elements, 0, Py_NewRef(acc));
                    }
                }
                else {
                    elements = PySequence_List(acc);
                }
                if (elements == NULL) {
                    goto next;
                }
                PyObject *call_args[3] = {user_key, second, elements};
                results = PyObject_Vectorcall(call, call_args, 3, NULL);
                Py_DECREF(elements);
                if (results == NULL) {
                    goto next;
                }
                /* stamped below, all with max_ts; side outputs get it too */
                if (results != Py_None &&
                    gather(results, max_ts, 0, out_v, out_t, side, tag_class) < 0) {
                    goto next;
                }
            }
            if (clear != Py_None) {
                if (stamp_outputs(out_v, out_t, max_ts, &count) < 0) {
                    goto next;
                }
                done = PyObject_CallOneArg(clear, window);
                if (done == NULL) {
                    goto next;
                }
                Py_CLEAR(done);
                if (PyObject_SetAttr(ctx, str_window, window) < 0) {
                    goto next;
                }
            }
            r = 0;
        next:
            Py_XDECREF(results);
            Py_DECREF(acc);
            Py_DECREF(key);
            if (r < 0 || PyErr_Occurred()) {
                Py_DECREF(entries);
                return NULL;
            }
            if (PyDict_GET_SIZE(entries) != size) {
                Py_DECREF(entries);
                PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
                return NULL;
            }
        }
    }
    Py_DECREF(entries);
    if (stamp_outputs(out_v, out_t, max_ts, &count) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Hide a container flowkit owns and never changes from the cyclic collector (the copy of
 * a collection a source reads): a collection of the young or middle generation walks every
 * item of a tracked list, a million of them for a large input. Nothing refers back to such
 * a container, so it can be in no cycle; its items stay tracked and alive while it holds
 * them. */
static PyObject *
speedups_untrack(PyObject *module, PyObject *container)
{
    if (!PyList_CheckExact(container) && !PyTuple_CheckExact(container)) {
        return wrong_type("untrack", "a list or a tuple", container);
    }
    PyObject_GC_UnTrack(container);
    Py_RETURN_NONE;
}

/* ValueState.value() and update() (flowkit/state/primitives.py), compiled: what the
 * keyed functions of most jobs call on every record. value_state_methods() returns the
 * two as method descriptors of the state class, and keeps the class's Python methods to
 * fall back to. The compiled ones handle the common case themselves: an instance of
 * exactly that class, whose backend keeps current_key and current_key_group in __slots__,
 * reading or writing the current key's entry in a namespace that has entries, where no
 * live snapshot holds the key group or what they read or write (a read of an immutable
 * value, a write to entries copied since the snapshot). Everything else (the first write
 * of a key group or namespace, the first write after a snapshot, a read of a mutable value
 * a snapshot may hold, a mutable default, None, another backend or a subclass) runs the
 * Python method. The slot offsets are read from the classes' member descriptors and used
 * only while the classes' version tags say they are unchanged. */
static struct {
    PyTypeObject *state_type, *group_type;
    PyObject *immutable, *py_value, *py_update;
    PyObject *s_backend, *s_groups, *s_ns, *s_default, *s_data, *s_frozen;
    unsigned int state_tag, group_tag; /* the tags the offsets were read at; 0: unusable */
    Py_ssize_t backend, groups, ns, deflt, data, frozen;
    PyTypeObject *backend_type; /* the backend class of the offsets below */
    unsigned int backend_tag;   /* 0: that class has no slots to read */
    Py_ssize_t cur_key, cur_group;
} vs;

#define SLOT_AT(o, offset) (*(PyObject **)((char *)(o) + (offset)))

/* A class's version tag: CPython gives a class a new one whenever it changes; 0 is none. */
static inline unsigned int
type_tag(PyTypeObject *t)
{
#if PY_VERSION_HEX < 0x030C0000
    /* 3.11 also marks a tag valid with a flag (3.12 on leave it unset, unused) */
    if (!(t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) {
        return 0;
    }
#endif
    return t->tp_version_tag;
}

/* Read the state and group classes' offsets (again). Returns whether they are usable. */
static int
vs_learn_classes(void)
{
    PyTypeObject *st = vs.state_type, *gt = vs.group_type;
    vs.state_tag = vs.group_tag = 0;
    if (st->tp_getattro != PyObject_GenericGetAttr || gt->tp_getattro != PyObject_GenericGetAttr) {
        return 0;
    }
    vs.backend = slot_offset(st, vs.s_backend, 0);
    vs.groups = slot_offset(st, vs.s_groups, 0);
    vs.ns = slot_offset(st, vs.s_ns, 0);
    vs.deflt = slot_offset(st, vs.s_default, 0);
    vs.data = slot_offset(gt, vs.s_data, 0);
    vs.frozen = slot_offset(gt, vs.s_frozen, 0);
    if (vs.backend < 0 || vs.groups < 0 || vs.ns < 0 || vs.deflt < 0 || vs.data < 0 ||
        vs.frozen < 0) {
        return 0;
    }
    vs.state_tag = type_tag(st);
    vs.group_tag = type_tag(gt);
    return vs.state_tag != 0 && vs.group_tag != 0;
}

/* Read a backend class's offsets of current_key and current_key_group. */
static int
vs_learn_backend(PyTypeObject *bt)
{
    Py_INCREF(bt);
    Py_XSETREF(vs.backend_type, bt);
    vs.backend_tag = 0;
    if (bt->tp_getattro != PyObject_GenericGetAttr) {
        return 0;
    }
    vs.cur_key = slot_offset(bt, str_current_key, 0);
    vs.cur_group = slot_offset(bt, str_current_key_group, 0);
    if (vs.cur_key < 0 || vs.cur_group < 0) {
        return 0;
    }
    vs.backend_tag = type_tag(bt);
    return vs.backend_tag != 0;
}

/* Where the current key's value of a state is: its key group's entries (a _Group's data
 * and frozen), the entries dict {key: value} of the state's namespace in it (NULL when
 * the key group or the namespace has none yet), the namespace and the current key. All
 * borrowed. */
typedef struct {
    PyObject *data, *frozen, *ns, *entries, *key;
} VsPlace;

/* Find the current key's place when the compiled methods can take this call: 1, 0 for the
 * Python method, -1 on an error (a namespace that cannot be hashed, say). */
static int
vs_place(PyObject *self, VsPlace *at)
{
    if (Py_TYPE(self) != vs.state_type) {
        return 0;
    }
    if (vs.state_tag == 0 || type_tag(vs.state_type) != vs.state_tag ||
        type_tag(vs.group_type) != vs.group_tag) {
        if (!vs_learn_classes()) {
            return 0;
        }
    }
    PyObject *backend = SLOT_AT(self, vs.backend);
    if (backend == NULL) {
        return 0;
    }
    PyTypeObject *bt = Py_TYPE(backend);
    if (bt != vs.backend_type || type_tag(bt) != vs.backend_tag || vs.backend_tag == 0) {
        if (!vs_learn_backend(bt)) {
            return 0;
        }
    }
    PyObject *kg = SLOT_AT(backend, vs.cur_group);
    PyObject *groups = SLOT_AT(self, vs.groups);
    at->ns = SLOT_AT(self, vs.ns);
    at->key = SLOT_AT(backend, vs.cur_key);
    if (kg == NULL || at->key == NULL || at->ns == NULL || groups == NULL ||
        !PyLong_CheckExact(kg) || !PyList_CheckExact(groups)) {
        return 0;
    }
    Py_ssize_t i = PyLong_AsSsize_t(kg);
    if (i < 0 || i >= PyList_GET_SIZE(groups)) {
        PyErr_Clear();
        return 0;
    }
    PyObject *group = PyList_GET_ITEM(groups, i);
    at->data = at->frozen = at->entries = NULL;
    if (group == Py_None) {
        return 1;
    }
    if (Py_TYPE(group) != vs.group_type) {
        return 0;
    }
    at->data = SLOT_AT(group, vs.data);
    at->frozen = SLOT_AT(group, vs.frozen);
    if (at->data == NULL || at->frozen == NULL || !PyDict_CheckExact(at->data)) {
        return 0;
    }
    Py_INCREF(at->data); /* a namespace's __eq__ runs Python code */
    at->entries = PyDict_GetItemWithError(at->data, at->ns);
    Py_DECREF(at->data);
    if (at->entries == NULL) {
        return PyErr_Occurred() ? -1 : 1;
    }
    return PyDict_CheckExact(at->entries) ? 1 : 0;
}

/* Whether the entries found may be written in place: no live snapshot holds the key group,
 * or both the key group's dict and these entries were copied since (copy on write, as
 * _writable in flowkit/state/table.py does it). -1 on an error. */
static int
vs_writable(VsPlace *at)
{
    if (at->frozen == Py_None) {
        return 1;
    }
    if (!PyDict_CheckExact(at->frozen) || at->data == at->frozen) {
        return 0;
    }
    Py_INCREF(at->frozen);
    PyObject *held = PyDict_GetItemWithError(at->frozen, at->ns);
    Py_DECREF(at->frozen);
    if (held == NULL && PyErr_Occurred()) {
        return -1;
    }
    return held != at->entries;
}

static PyObject *
vs_value(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    VsPlace at;
    int ok = vs_place(self, &at);
    if (ok < 0) {
        return NULL;
    }
    if (ok == 0) {
        return PyObject_CallOneArg(vs.py_value, self);
    }
    if (at.entries != NULL) {
        Py_INCREF(at.entries); /* as is the key's __eq__ */
        PyObject *value = PyDict_GetItemWithError(at.entries, at.key);
        Py_XINCREF(value);
        Py_DECREF(at.entries);
        if (value != NULL) {
            if (at.frozen == Py_None) {
                return value; /* no snapshot holds it */
            }
            /* A snapshot may hold it: handed out as it is only if it cannot change. */
            int immutable = PySet_Contains(vs.immutable, (PyObject *)Py_TYPE(value));
            if (immutable != 0) {
                if (immutable < 0) {
                    Py_CLEAR(value);
                }
                return value;
            }
            Py_DECREF(value);
            return PyObject_CallOneArg(vs.py_value, self);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    PyObject *deflt = SLOT_AT(self, vs.deflt);
    if (deflt == NULL) {
        return PyObject_CallOneArg(vs.py_value, self);
    }
    int immutable = PySet_Contains(vs.immutable, (PyObject *)Py_TYPE(deflt));
    if (immutable < 0) {
        return NULL;
    }
    return immutable ? Py_NewRef(deflt) : PyObject_CallOneArg(vs.py_value, self);
}

/* update(value) or update(value=value), as the Python method takes it; any other call goes
 * to the Python method, which raises what Python raises. */
static PyObject *
vs_update(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *value = nargs + nkw == 1 ? args[0] : NULL;
    if (nkw == 1 &&
        PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "value") != 0) {
        value = NULL;
    }
    VsPlace at;
    int ok = value == NULL || value == Py_None ? 0 : vs_place(self, &at);
    if (ok > 0) {
        ok = at.entries == NULL ? 0 : vs_writable(&at);
    }
    if (ok < 0) {
        return NULL;
    }
    if (ok == 0) {
        /* self in front of the arguments: the Python method's own call */
        PyObject *small[3];
        Py_ssize_t n = nargs + nkw;
        PyObject **all = n < 3 ? small : PyMem_New(PyObject *, n + 1);
        if (all == NULL) {
            return PyErr_NoMemory();
        }
        all[0] = self;
        for (Py_ssize_t i = 0; i < n; i++) {
            all[i + 1] = args[i];
        }
        PyObject *result = PyObject_Vectorcall(vs.py_update, all, nargs + 1, kwnames);
        if (all != small) {
            PyMem_Free(all);
        }
        return result;
    }
    untrack_if_atomic(value);
    Py_INCREF(at.entries);
    int failed = PyDict_SetItem(at.entries, at.key, value);
    Py_DECREF(at.entries);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef vs_value_def = {
    "value", vs_value, METH_NOARGS,
    "value($self, /)\n--\n\nThe current key's value (the descriptor's default when unset)."};
static PyMethodDef vs_update_def = {
    "update", (PyCFunction)(void (*)(void))vs_update, METH_FASTCALL | METH_KEYWORDS,
    "update($self, value)\n--\n\nSet the current key's value (None clears it)."};

static PyObject *
speedups_value_state_methods(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1]) ||
        !PyFrozenSet_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "value_state_methods(state_type, group_type, immutable) takes two "
                        "classes and a frozenset");
        return NULL;
    }
    PyTypeObject *st = (PyTypeObject *)args[0];
    PyObject *py_value = PyDict_GetItemString(st->tp_dict, "value");
    PyObject *py_update = PyDict_GetItemString(st->tp_dict, "update");
    if (py_value == NULL || py_update == NULL || !PyFunction_Check(py_value) ||
        !PyFunction_Check(py_update)) {
        PyErr_SetString(PyExc_TypeError,
                        "value_state_methods: the state class must define value and update "
                        "as Python functions");
        return NULL;
    }
    if (vs.s_backend == NULL) {
        vs.s_backend = PyUnicode_InternFromString("_backend");
        vs.s_groups = PyUnicode_InternFromString("_groups");
        vs.s_ns = PyUnicode_InternFromString("_ns");
        vs.s_default = PyUnicode_InternFromString("_default");
        vs.s_data = PyUnicode_InternFromString("data");
        vs.s_frozen = PyUnicode_InternFromString("frozen");
        if (!vs.s_backend || !vs.s_groups || !vs.s_ns || !vs.s_default || !vs.s_data ||
            !vs.s_frozen) {
            return NULL;
        }
    }
    if (intern_names() < 0) {
        return NULL;
    }
    Py_XSETREF(vs.state_type, (PyTypeObject *)Py_NewRef(st));
    Py_XSETREF(vs.group_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(vs.immutable, Py_NewRef(args[2]));
    Py_XSETREF(vs.py_value, Py_NewRef(py_value));
    Py_XSETREF(vs.py_update, Py_NewRef(py_update));
    vs.state_tag = vs.group_tag = 0;
    Py_CLEAR(vs.backend_type);
    vs.backend_tag = 0;
    PyObject *value = PyDescr_NewMethod(st, &vs_value_def);
    PyObject *update = PyDescr_NewMethod(st, &vs_update_def);
    if (value == NULL || update == NULL) {
        Py_XDECREF(value);
        Py_XDECREF(update);
        return NULL;
    }
    return Py_BuildValue("(NN)", value, update);
}

/* untrack_if_atomic for Python code (ValueState.update). */
static PyObject *
speedups_untrack_atoms(PyObject *module, PyObject *value)
{
    untrack_if_atomic(value);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------
 * TimestampHeap: the heap of a timer queue's distinct timestamps (flowkit/eventtime/
 * timers.py, _TimerQueue), a binary min-heap in an array of 64-bit ints. The queue
 * forgets a deleted timestamp lazily (its bucket is gone, so it is skipped when popped)
 * and rebuilds the heap from its buckets once forgotten entries outnumber the live ones.
 * The heap of Python ints it replaces was rebuilt by sorting them: tens of milliseconds
 * for 500,000, each comparison reading two int objects from memory; here a few. Python
 * ints past 64 bits raise OverflowError (the queue then keeps a heap of Python ints:
 * _ListHeap in flowkit/eventtime/timers.py, the pure-Python version of this type).
 * ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int64_t *heap; /* heap[0] is the smallest */
    Py_ssize_t size, cap;
} TsHeap;

static void
ts_sift_up(int64_t *heap, Py_ssize_t p)
{
    int64_t ts = heap[p];
    while (p > 0) {
        Py_ssize_t parent = (p - 1) >> 1;
        if (heap[parent] <= ts) {
            break;
        }
        heap[p] = heap[parent];
        p = parent;
    }
    heap[p] = ts;
}

static void
ts_sift_down(int64_t *heap, Py_ssize_t n, Py_ssize_t p)
{
    int64_t ts = heap[p];
    for (;;) {
        Py_ssize_t child = 2 * p + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n && heap[child + 1] < heap[child]) {
            child++;
        }
        if (ts <= heap[child]) {
            break;
        }
        heap[p] = heap[child];
        p = child;
    }
    heap[p] = ts;
}

/* The 64-bit value of a timestamp: OverflowError past 64 bits, TypeError if not an int. */
static int
ts_arg(PyObject *arg, int64_t *out)
{
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "a timer timestamp is an int, got %.200s",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (overflow != 0) {
        PyErr_SetString(PyExc_OverflowError, "a timer timestamp beyond 64 bits");
        return -1;
    }
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static PyObject *
tsheap_push(TsHeap *h, PyObject *arg)
{
    int64_t ts;
    if (ts_arg(arg, &ts) < 0) {
        return NULL;
    }
    int64_t *heap = grow_array(h->heap, &h->cap, h->size + 1, sizeof(int64_t));
    if (heap == NULL) {
        return NULL;
    }
    h->heap = heap;
    h->heap[h->size] = ts;
    ts_sift_up(h->heap, h->size++);
    Py_RETURN_NONE;
}

static PyObject *
tsheap_pop(TsHeap *h, PyObject *Py_UNUSED(ignored))
{
    if (h->size == 0) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty TimestampHeap");
        return NULL;
    }
    int64_t ts = h->heap[0];
    h->heap[0] = h->heap[--h->size];
    if (h->size > 1) {
        ts_sift_down(h->heap, h->size, 0);
    }
    return PyLong_FromLongLong((long long)ts);
}

static PyObject *
tsheap_low(TsHeap *h, PyObject *Py_UNUSED(ignored))
{
    if (h->size == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong((long long)h->heap[0]);
}

/* rebuild(timestamps): the heap of exactly these (an iterable of ints), in O(n). */
static PyObject *
tsheap_rebuild(TsHeap *h, PyObject *timestamps)
{
    PyObject *seq = PySequence_Fast(timestamps, "rebuild() takes an iterable of ints");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int64_t *heap = n > 0 ? PyMem_New(int64_t, n) : NULL;
    if (n > 0 && heap == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ts_arg(items[i], &heap[i]) < 0) {
            PyMem_Free(heap);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    for (Py_ssize_t p = n / 2 - 1; p >= 0; p--) {
        ts_sift_down(heap, n, p);
    }
    PyMem_Free(h->heap);
    h->heap = heap;
    h->size = h->cap = n;
    Py_RETURN_NONE;
}

static PyObject *
tsheap_entries(TsHeap *h, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(h->size);
    for (Py_ssize_t p = 0; out != NULL && p < h->size; p++) {
        PyObject *v = PyLong_FromLongLong((long long)h->heap[p]);
        if (v == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, p, v);
    }
    return out;
}

static Py_ssize_t
tsheap_len(TsHeap *h)
{
    return h->size;
}

static void
tsheap_dealloc(TsHeap *h)
{
    PyMem_Free(h->heap);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *
tsheap_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "TimestampHeap() takes no arguments");
        return NULL;
    }
    TsHeap *h = (TsHeap *)type->tp_alloc(type, 0);
    if (h != NULL) {
        h->heap = NULL;
        h->size = h->cap = 0;
    }
    return (PyObject *)h;
}

static PyMethodDef tsheap_methods[] = {
    {"push", (PyCFunction)tsheap_push, METH_O,
     "push(timestamp, /)\n--\n\nAdd a timestamp (an int of at most 64 bits)."},
    {"pop", (PyCFunction)tsheap_pop, METH_NOARGS,
     "pop($self, /)\n--\n\nTake out and return the smallest timestamp (IndexError if none)."},
    {"low", (PyCFunction)tsheap_low, METH_NOARGS,
     "low($self, /)\n--\n\nThe smallest timestamp, or None."},
    {"rebuild", (PyCFunction)tsheap_rebuild, METH_O,
     "rebuild(timestamps, /)\n--\n\nHold exactly these timestamps (an iterable of ints)."},
    {"entries", (PyCFunction)tsheap_entries, METH_NOARGS,
     "entries($self, /)\n--\n\nThe timestamps held, in heap order, as a list."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods tsheap_as_sequence = {
    .sq_length = (lenfunc)tsheap_len,
};

static PyTypeObject TsHeapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flowkit._speedups.TimestampHeap",
    .tp_basicsize = sizeof(TsHeap),
    .tp_dealloc = (destructor)tsheap_dealloc,
    .tp_as_sequence = &tsheap_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "TimestampHeap()\n--\n\nA min-heap of 64-bit timestamps: push, pop and low "
              "(the smallest).",
    .tp_methods = tsheap_methods,
    .tp_new = tsheap_new,
};

static PyMethodDef speedups_methods[] = {
    {"str_hash", speedups_str_hash, METH_O,
     "str_hash(s, /)\n--\n\nJava's String.hashCode of s, as a signed 32-bit int."},
    {"murmur_hash", speedups_murmur_hash, METH_O,
     "murmur_hash(code, /)\n--\n\nFlink's MathUtils.murmurHash of the low 32 bits of code."},
    {"str_key_group", (PyCFunction)(void (*)(void))speedups_str_key_group, METH_FASTCALL,
     "str_key_group(key, max_parallelism, /)\n--\n\n"
     "The key group of a str key: murmur_hash(str_hash(key)) % max_parallelism."},
    {"int_key_group", (PyCFunction)(void (*)(void))speedups_int_key_group, METH_FASTCALL,
     "int_key_group(key, max_parallelism, /)\n--\n\n"
     "The key group of an int key that fits 64 bits (Integer/Long.hashCode), else None."},
    {"encode_batch", speedups_encode_batch, METH_O,
     "encode_batch(values, /)\n--\n\n"
     "A list or tuple of records in flowkit's binary format, or None when a record is not\n"
     "made of exact built-in types (str, int within 64 bits, float, bool, None, bytes,\n"
     "tuple, list, dict) or values is another kind of sequence."},
    {"untrack", speedups_untrack, METH_O,
     "untrack(container, /)\n--\n\n"
     "Hide a list or tuple that nothing refers back to and that never changes from the\n"
     "cyclic garbage collector (gc.is_tracked(container) is False afterwards)."},
    {"untrack_atoms", speedups_untrack_atoms, METH_O,
     "untrack_atoms(value, /)\n--\n\n"
     "Untrack value from the cyclic garbage collector if it is an exact tuple none of whose\n"
     "items is or may become tracked (what the collector itself does to such a tuple in\n"
     "its first collection); do nothing otherwise."},
    {"decode_batch", speedups_decode_batch, METH_O,
     "decode_batch(payload, /)\n--\n\n"
     "The list of records encode_batch wrote into payload (any bytes-like object)."},
    {"run_keyed", (PyCFunction)(void (*)(void))speedups_run_keyed, METH_FASTCALL,
     "run_keyed(values, timestamps, key_selector, max_parallelism, group_of, normalize,\n"
     "          backend, ctx, fn, out, stamps, add, side, tag_class, generator_type, /)\n--\n\n"
     "The keyed process loop of flowkit.operators.process._run_keyed."},
    {"state_key", (PyCFunction)(void (*)(void))speedups_state_key, METH_FASTCALL,
     "state_key(by_class, slow, key, /)\n--\n\n"
     "key if it is plain (exact str, int, bytes, None, a float neither whole nor NaN, or a\n"
     "tuple of plain keys), else\n"
     "by_class[type(key)][key] if present, else slow(key)."},
    {"window_add", (PyCFunction)(void (*)(void))speedups_window_add, METH_FASTCALL,
     "window_add(values, timestamps, key_of, canonical, max_parallelism, key_group_of,\n"
     "           kg_low, kg_high, not_owned, slots, window_for, add_other, late, late_marker,\n"
     "           size, slide, offset, lateness, watermark, kind, fn, create, at, /)\n--\n\n"
     "The input loop of flowkit.operators.window.WindowOperator._process_batch_fast. Returns\n"
     "how many records it handled: the Python loop takes the rest (a record without an int\n"
     "timestamp, or windows beyond 64 bits). On an error, at[0] is the failing record's\n"
     "index."},
    {"window_fire", (PyCFunction)(void (*)(void))speedups_window_fire, METH_FASTCALL,
     "window_fire(entries, backend, set_key, call, second, kind, get_result, clear, window,\n"
     "            ctx, out_v, out_t, max_ts, side, tag_class, exact_key_type,\n"
     "            max_parallelism, key_group_of, /)\n--\n\n"
     "The firing loop of flowkit.operators.window.WindowOperator._fire_entries (set_key None:\n"
     "the key and its key group are set as attributes of backend)."},
    {"split_by_key_group", (PyCFunction)(void (*)(void))speedups_split_by_key_group,
     METH_FASTCALL,
     "split_by_key_group(entries, max_parallelism, group_of, by_first=False, /)\n--\n\n"
     "{key group: {key: value}} of the entries of a dict, each key's group computed as\n"
     "str_key_group and int_key_group do (else group_of(key)); by_first: the keys are\n"
     "tuples, each in the key group of its first item."},
    {"value_state_methods", (PyCFunction)(void (*)(void))speedups_value_state_methods,
     METH_FASTCALL,
     "value_state_methods(state_type, group_type, immutable, /)\n--\n\n"
     "Compiled value() and update() for flowkit.state.primitives.ValueState, as method\n"
     "descriptors of state_type; they fall back to the class's own Python methods."},
    {"reduce_batch", (PyCFunction)(void (*)(void))speedups_reduce_batch, METH_FASTCALL,
     "reduce_batch(values, key_of, accs, reduce, state_key, out, pair_sum, /)\n--\n\n"
     "The keyed reduce loop of flowkit.operators.keyed.KeyedReduceOperator: one output\n"
     "appended to out per record; on an error, out holds the outputs before it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "flowkit._speedups",
    "Compiled versions of flowkit's key-group hashes, record batch encoding and hot loops.",
    0,
    speedups_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module = PyModule_Create(&speedups_module);
    /* flowkit/_native.py uses the module only if this matches what it expects: an
     * install whose module was built from an older flowkit/_speedups.c runs the
     * pure-Python code instead of failing. Raise it with every change of a signature. */
    if (module != NULL && PyModule_AddIntConstant(module, "API_VERSION", 12) < 0) {
        Py_CLEAR(module);
    }
    if (module != NULL &&
        (PyType_Ready(&TsHeapType) < 0 ||
         PyModule_AddObjectRef(module, "TimestampHeap", (PyObject *)&TsHeapType) < 0)) {
        Py_CLEAR(module);
    }
    return module;
}
