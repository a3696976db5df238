/*
 * eval._rle: check many COCO compressed-RLE counts strings in one call, and give each valid one its pycocotools
 * box and area.
 *
 * The rule is eval.io.compressed_rle_problem's (the scalar reference, kept in Python for its messages), with the
 * decoding of pycocotools' rleFrString (maskApi.c): 6-bit characters '0'..'o', 5 data bits and a continuation bit
 * each, sign extension of a number's last character, counts from the fourth on (index m > 2) stored as the
 * difference to count m - 2. A string is refused when it is empty, holds a character outside the alphabet, ends
 * inside a number, encodes a number in more than 12 characters, decodes to a negative run, or its runs do not sum
 * to height x width. pycocotools checks none of this (a short string makes mask.iou loop forever), which is why
 * every string goes through here before any library sees it.
 *
 * For a valid string the box is pycocotools' rleToBbox ([x, y, w, h], its uint32 arithmetic, an odd trailing count
 * dropped, a run that spans columns widening the box to the full height) and the area rleArea (the sum of the odd
 * runs). tests/test_rle_check.py holds this equal to the NumPy decoder, to compressed_rle_problem and to
 * pycocotools.mask.toBbox / area on fuzzed and real strings.
 *
 * check(counts, heights, widths) -> (codes, boxes, areas)
 *   counts: list of str (ASCII) or bytes, N entries; heights, widths: C-contiguous int64 buffers of N entries
 *   (pixels). Returns bytes: codes N x uint8 (0 = valid, see the CODE_ constants), boxes N x 4 float64, areas
 *   N x float64 (zeros where refused). The decoding runs without the GIL, so that threads can check batches in
 *   parallel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { CODE_OK = 0, CODE_EMPTY = 1, CODE_CHAR = 2, CODE_TRUNCATED = 3, CODE_LONG = 4, CODE_NEGATIVE = 5,
       CODE_TOTAL = 6 };

/* Decode one counts string into cnts (growable); return its code. */
static int parse_one(const unsigned char *s, Py_ssize_t n, int64_t total, uint32_t **cnts, size_t *cap,
                     size_t *m_out) {
    size_t m = 0;
    int64_t sum = 0, c1 = 0, c2 = 0; /* counts m - 1 and m - 2 */
    Py_ssize_t p = 0;
    if (n == 0) return CODE_EMPTY;
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 48 || s[i] > 111) return CODE_CHAR;
    while (p < n) {
        int64_t x = 0;
        int k = 0, more = 1;
        while (more) {
            int c;
            if (p >= n) return CODE_TRUNCATED;
            if (k >= 12) return CODE_LONG;
            c = (int)s[p] - 48;
            x |= (int64_t)(c & 0x1f) << (5 * k);
            more = c & 0x20;
            p++;
            k++;
            if (!more && (c & 0x10)) x |= (int64_t)(UINT64_MAX << (5 * k));
        }
        if (m > 2) x += c2;
        if (x < 0) return CODE_NEGATIVE;
        if (x > total) return CODE_TOTAL; /* all runs are >= 0: one run above the total cannot sum to it */
        sum += x;
        if (sum > total) return CODE_TOTAL;
        if (m == *cap) {
            size_t nc = *cap ? 2 * *cap : 1024;
            uint32_t *nb = (uint32_t *)realloc(*cnts, nc * sizeof(uint32_t));
            if (!nb) return -1;
            *cnts = nb;
            *cap = nc;
        }
        (*cnts)[m++] = (uint32_t)x;
        c2 = c1;
        c1 = x;
    }
    if (sum != total) return CODE_TOTAL;
    *m_out = m;
    return CODE_OK;
}

/* pycocotools rleToBbox and rleArea of one decoded RLE (same unsigned 32-bit arithmetic). */
static void box_area(const uint32_t *cnts, size_t m_all, uint32_t h, uint32_t w, double *bb, double *area) {
    uint32_t xs, ys, xe, ye, xp = 0, cc = 0, t, x, y, a = 0;
    size_t j, m = (m_all / 2) * 2;
    for (j = 1; j < m_all; j += 2) a += cnts[j];
    *area = (double)a;
    if (m == 0) {
        bb[0] = bb[1] = bb[2] = bb[3] = 0;
        return;
    }
    xs = w;
    ys = h;
    xe = ye = 0;
    for (j = 0; j < m; j++) {
        cc += cnts[j];
        t = cc - (uint32_t)(j % 2);
        y = t % h;
        x = (t - y) / h;
        if (j % 2 == 0)
            xp = x;
        else if (xp < x) {
            ys = 0;
            ye = h - 1;
        }
        xs = xs < x ? xs : x;
        xe = xe > x ? xe : x;
        ys = ys < y ? ys : y;
        ye = ye > y ? ye : y;
    }
    bb[0] = xs;
    bb[2] = (double)(uint32_t)(xe - xs + 1);
    bb[1] = ys;
    bb[3] = (double)(uint32_t)(ye - ys + 1);
}

static PyObject *check(PyObject *self, PyObject *args) {
    PyObject *seq, *fast = NULL, *codes_obj = NULL, *boxes_obj = NULL, *areas_obj = NULL;
    Py_buffer hb = {0}, wb = {0};
    uint32_t *cnts = NULL;
    const char **ptrs = NULL;
    Py_ssize_t *lens = NULL;
    size_t cap = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*y*", &seq, &hb, &wb)) return NULL;
    fast = PySequence_Fast(seq, "counts must be a list of str or bytes");
    if (!fast) goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (hb.len != n * (Py_ssize_t)sizeof(int64_t) || wb.len != n * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "heights and widths must be int64 buffers of len(counts) entries");
        goto fail;
    }
    codes_obj = PyBytes_FromStringAndSize(NULL, n);
    boxes_obj = PyBytes_FromStringAndSize(NULL, n * 4 * (Py_ssize_t)sizeof(double));
    areas_obj = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(double));
    if (!codes_obj || !boxes_obj || !areas_obj) goto fail;
    unsigned char *codes = (unsigned char *)PyBytes_AS_STRING(codes_obj);
    double *boxes = (double *)PyBytes_AS_STRING(boxes_obj);
    double *areas = (double *)PyBytes_AS_STRING(areas_obj);
    const int64_t *hs = (const int64_t *)hb.buf, *ws = (const int64_t *)wb.buf;
    PyObject **items = PySequence_Fast_ITEMS(fast);
    /* Phase 1, holding the GIL: every string's bytes and length (NULL: not ASCII), every size checked. */
    ptrs = (const char **)malloc((n ? n : 1) * sizeof(*ptrs));
    lens = (Py_ssize_t *)malloc((n ? n : 1) * sizeof(*lens));
    if (!ptrs || !lens) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = items[i];
        if (PyUnicode_Check(o)) {
            if (PyUnicode_IS_ASCII(o)) {
                ptrs[i] = (const char *)PyUnicode_DATA(o);
                lens[i] = PyUnicode_GET_LENGTH(o);
            } else { /* a non-ASCII character is outside the alphabet */
                ptrs[i] = NULL;
                lens[i] = 0;
            }
        } else if (PyBytes_Check(o)) {
            ptrs[i] = PyBytes_AS_STRING(o);
            lens[i] = PyBytes_GET_SIZE(o);
        } else {
            PyErr_Format(PyExc_TypeError, "counts[%zd] is %s, not str or bytes", i, Py_TYPE(o)->tp_name);
            goto fail;
        }
        if (hs[i] <= 0 || ws[i] <= 0 || hs[i] > (int64_t)UINT32_MAX / ws[i]) { /* no int64 overflow */
            PyErr_Format(PyExc_ValueError, "entry %zd: image size %lld x %lld is not a positive size below 2^32 "
                         "pixels", i, (long long)hs[i], (long long)ws[i]);
            goto fail;
        }
    }
    /* Phase 2, without the GIL (the list and its immutable strings stay referenced by `fast`): other threads
       may check other batches meanwhile (eval.masks.check_rles runs one batch per CPU). */
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t m = 0;
        int code = ptrs[i] ? parse_one((const unsigned char *)ptrs[i], lens[i], hs[i] * ws[i], &cnts, &cap, &m)
                           : CODE_CHAR;
        if (code < 0) {
            oom = 1;
            break;
        }
        codes[i] = (unsigned char)code;
        if (code == CODE_OK)
            box_area(cnts, m, (uint32_t)hs[i], (uint32_t)ws[i], boxes + 4 * i, areas + i);
        else {
            memset(boxes + 4 * i, 0, 4 * sizeof(double));
            areas[i] = 0;
        }
    }
    Py_END_ALLOW_THREADS
    if (oom) {
        PyErr_NoMemory();
        goto fail;
    }
    free(ptrs);
    free(lens);
    free(cnts);
    Py_DECREF(fast);
    PyBuffer_Release(&hb);
    PyBuffer_Release(&wb);
    return Py_BuildValue("NNN", codes_obj, boxes_obj, areas_obj);
fail:
    free(cnts);
    free(ptrs);
    free(lens);
    Py_XDECREF(fast);
    Py_XDECREF(codes_obj);
    Py_XDECREF(boxes_obj);
    Py_XDECREF(areas_obj);
    PyBuffer_Release(&hb);
    PyBuffer_Release(&wb);
    return NULL;
}

static PyMethodDef methods[] = {
    {"check", check, METH_VARARGS,
     "check(counts, heights, widths) -> (codes, boxes, areas): see the module's source header."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rle",
                                    "Batched COCO compressed-RLE validation (see eval/_rle.c).", -1, methods};

PyMODINIT_FUNC PyInit__rle(void) { return PyModule_Create(&module); }
