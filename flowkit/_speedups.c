/*
 * flowkit._speedups: compiled versions of a few pure-Python functions of flowkit.
 *
 * Built from source by `pip install` when a C compiler is present; when it is not (or
 * when FLOWKIT_NO_EXTENSIONS is set), flowkit uses the pure-Python functions, which
 * compute exactly the same values. The tests compare the two.
 *
 * The functions are the ones a key's first record pays for: its key group, that is
 * Flink's murmur hash of Java's hashCode of the key (flowkit/state/key_groups.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Java String.hashCode over the UTF-16 code units of s, as a 32-bit wrap-around value:
 * h = 31 * h + unit. Characters beyond the BMP count as their two surrogate units; a lone
 * surrogate is one unit, as in a Java string. */
static uint32_t
java_str_hash(PyObject *s)
{
    /* s is ready: the callers check PyUnicode_READY. */
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

static int
max_parallelism_arg(PyObject *arg, long *out)
{
    long mp = PyLong_AsLong(arg);
    if (mp == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (mp < 1 || mp > 32768) {
        PyErr_Format(PyExc_ValueError,
                     "max_parallelism must be between 1 and 32768, got %ld", mp);
        return -1;
    }
    *out = mp;
    return 0;
}

static PyObject *
speedups_str_hash(PyObject *module, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "str_hash() takes a str, got %.200s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    if (PyUnicode_READY(arg) < 0) {
        return NULL;
    }
    return PyLong_FromLong((int32_t)java_str_hash(arg));
}

static PyObject *
speedups_murmur_hash(PyObject *module, PyObject *arg)
{
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "murmur_hash() takes an int, got %.200s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
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
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "str_key_group() takes (key, max_parallelism)");
        return NULL;
    }
    if (!PyUnicode_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "str_key_group() takes a str key, got %.200s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (max_parallelism_arg(args[1], &mp) < 0 || PyUnicode_READY(args[0]) < 0) {
        return NULL;
    }
    return PyLong_FromLong(murmur(java_str_hash(args[0])) % mp);
}

static PyObject *
speedups_int_key_group(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long mp;
    int fits = 0;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "int_key_group() takes (key, max_parallelism)");
        return NULL;
    }
    if (!PyLong_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "int_key_group() takes an int key, got %.200s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (max_parallelism_arg(args[1], &mp) < 0) {
        return NULL;
    }
    uint32_t code = java_int_hash(args[0], &fits);
    if (!fits) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(murmur(code) % mp);
}

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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "flowkit._speedups",
    "Compiled versions of flowkit's key-group hash functions.",
    0,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
