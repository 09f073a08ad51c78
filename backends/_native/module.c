/* backends._fastpath: the Python side of the native fast path.
 *
 *   Codec   the peer table and the per-packet decisions (from_tun, from_net), and the
 *           processing of one TUN read (tun_read) or one received group (deliver) with
 *           their output captured: the entry points the differential tests use
 *           (tests/unit/test_native.py), running the same C as the I/O thread.
 *   Engine  the I/O thread over a TUN fd and UDP sockets; Python pushes peer changes
 *           (through its Codec), reads counters and takes the slow packets.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "engine.h"

static const uint8_t PLAIN_META[FP_VNET_HDR_LEN];

static const char *const COUNTER_NAMES[] = {
    "tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "gso_sends", "gso_segments",
    "gro_batches", "gro_segments", "tso_packets", "tso_segments", "tso_cuts",
    "joined_packets", "joined_segments", "checksums_finished", "checksums_completed",
    "slow_packets",
};

static PyObject *counters_dict(const fp_counters *c)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    const uint64_t *values = &c->tx_packets;
    for (size_t i = 0; i < sizeof COUNTER_NAMES / sizeof *COUNTER_NAMES; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(values[i]);
        if (!v || PyDict_SetItemString(d, COUNTER_NAMES[i], v)) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    PyObject *drops = PyTuple_New(FP_DROP_REASONS);
    if (!drops) {
        Py_DECREF(d);
        return NULL;
    }
    for (int i = 0; i < FP_DROP_REASONS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(c->drops[i]);
        if (!v) {
            Py_DECREF(drops);
            Py_DECREF(d);
            return NULL;
        }
        PyTuple_SET_ITEM(drops, i, v);
    }
    int failed = PyDict_SetItemString(d, "drops", drops);
    Py_DECREF(drops);
    if (failed) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* ---- Codec ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    fp_codec codec;
    int ready;
} CodecObject;

static int Codec_init(CodecObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "own_net", "subnet_len", "mtu", "vni", "own_mac", NULL};
    int kind, subnet_len, mtu;
    unsigned long own_net, vni = 0;
    Py_buffer mac = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ikii|ky*", kwlist, &kind, &own_net,
                                     &subnet_len, &mtu, &vni, &mac))
        return -1;
    uint8_t own_mac[6] = {0};
    if (mac.buf) {
        if (mac.len != 6) {
            PyBuffer_Release(&mac);
            PyErr_SetString(PyExc_ValueError, "own_mac must be 6 bytes");
            return -1;
        }
        memcpy(own_mac, mac.buf, 6);
        PyBuffer_Release(&mac);
    }
    if ((kind != FP_UDP && kind != FP_VXLAN) || subnet_len < 0 || subnet_len > 32 || mtu < 0
        || own_net > 0xFFFFFFFFul || vni >= 1ul << 24) {
        PyErr_SetString(PyExc_ValueError, "bad codec parameters");
        return -1;
    }
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Codec is already initialised");
        return -1;
    }
    if (fp_codec_init(&self->codec, kind, (uint32_t)own_net, subnet_len, mtu, (uint32_t)vni,
                      own_mac)) {
        PyErr_SetString(PyExc_OSError, "cannot initialise the codec's lock");
        return -1;
    }
    self->ready = 1;
    return 0;
}

static void Codec_dealloc(CodecObject *self)
{
    if (self->ready)
        fp_codec_free(&self->codec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_ready(CodecObject *self)
{
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Codec is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *Codec_add(CodecObject *self, PyObject *args)
{
    unsigned long net, ip;
    int port;
    Py_buffer header = {0};
    if (!check_ready(self) || !PyArg_ParseTuple(args, "kki|y*", &net, &ip, &port, &header))
        return NULL;
    fp_route route = {(uint32_t)ip, (uint16_t)port, {0}};
    if (header.buf) {
        if (header.len != (self->codec.kind == FP_VXLAN ? FP_VXLAN_HEADROOM : 0)) {
            PyBuffer_Release(&header);
            PyErr_SetString(PyExc_ValueError, "the header does not fit this codec");
            return NULL;
        }
        memcpy(route.header, header.buf, (size_t)header.len);
        PyBuffer_Release(&header);
    }
    pthread_mutex_lock(&self->codec.lock);
    int failed = fp_codec_add(&self->codec, (uint32_t)net, &route);
    pthread_mutex_unlock(&self->codec.lock);
    if (failed)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *Codec_remove(CodecObject *self, PyObject *args)
{
    unsigned long net;
    if (!check_ready(self) || !PyArg_ParseTuple(args, "k", &net))
        return NULL;
    pthread_mutex_lock(&self->codec.lock);
    fp_codec_remove(&self->codec, (uint32_t)net);
    pthread_mutex_unlock(&self->codec.lock);
    Py_RETURN_NONE;
}

static Py_ssize_t Codec_len(CodecObject *self)
{
    return self->ready ? (Py_ssize_t)self->codec.route_count : 0;
}

/* a writable buffer of at least `need` bytes */
static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t need)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS))
        return -1;
    if (view->len < need) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "the buffer holds %zd bytes, %zd are needed", view->len,
                     need);
        return -1;
    }
    return 0;
}

static PyObject *Codec_from_tun(CodecObject *self, PyObject *args)
{
    PyObject *obj;
    unsigned int n;
    if (!check_ready(self) || !PyArg_ParseTuple(args, "OI", &obj, &n))
        return NULL;
    Py_buffer view;
    if (get_buffer(obj, &view, (Py_ssize_t)self->codec.headroom + n))
        return NULL;
    fp_verdict v = {0};
    pthread_mutex_lock(&self->codec.lock);
    fp_from_tun(&self->codec, view.buf, n, &v);
    pthread_mutex_unlock(&self->codec.lock);
    PyBuffer_Release(&view);
    return Py_BuildValue("iiIkH", v.action, v.reason, v.flow, (unsigned long)v.route.ip,
                         v.route.port);
}

static PyObject *Codec_from_net(CodecObject *self, PyObject *args)
{
    PyObject *obj;
    unsigned int n;
    unsigned long src;
    if (!check_ready(self) || !PyArg_ParseTuple(args, "OIk", &obj, &n, &src))
        return NULL;
    Py_buffer view;
    if (get_buffer(obj, &view, n))
        return NULL;
    fp_verdict v = {0};
    fp_counters counters = {0};
    pthread_mutex_lock(&self->codec.lock);
    fp_from_net(&self->codec, view.buf, n, (uint32_t)src, &v, &counters);
    pthread_mutex_unlock(&self->codec.lock);
    PyBuffer_Release(&view);
    return Py_BuildValue("iiIK", v.action, v.reason, v.length,
                         (unsigned long long)counters.checksums_completed);
}

/* the output of one call of the processing core, captured as Python objects */
typedef struct {
    fp_path path;
    PyObject *sends, *writes, *slow;
    int failed;
} capture;

static int capture_tun_write(fp_path *p, const struct iovec *iov, int iovcnt)
{
    capture *cap = p->sink;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    PyObject *data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!data) {
        cap->failed = 1;
        return 0;
    }
    char *at = PyBytes_AS_STRING(data);
    for (int i = 0; i < iovcnt; i++) {
        memcpy(at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    if (PyList_Append(cap->writes, data))
        cap->failed = 1;
    Py_DECREF(data);
    return 0;
}

static void capture_flush(fp_path *p)
{
    capture *cap = p->sink;
    fp_outbox *o = p->out;
    for (int i = 0; i < o->nmsgs; i++) {
        fp_msg *m = &o->msgs[i];
        PyObject *item = Py_BuildValue("iIHIIy#", m->sock, m->ip, m->port, m->seg, m->count,
                                       (const char *)o->buf + m->off, (Py_ssize_t)m->len);
        if (!item || PyList_Append(cap->sends, item))
            cap->failed = 1;
        Py_XDECREF(item);
        fp_count_sent(p->counters, m);  /* as the engine counts a send that went */
    }
    o->used = 0;
    o->nmsgs = 0;
}

static void capture_slow(fp_path *p, int kind, const uint8_t *meta, const uint8_t *data,
                         uint32_t len, uint32_t src)
{
    capture *cap = p->sink;
    PyObject *item = Py_BuildValue("iy#y#I", kind, (const char *)(meta ? meta : PLAIN_META),
                                   (Py_ssize_t)(meta ? FP_VNET_HDR_LEN : 0),
                                   (const char *)data, (Py_ssize_t)len, src);
    if (!item || PyList_Append(cap->slow, item))
        cap->failed = 1;
    Py_XDECREF(item);
}

static int capture_open(capture *cap, CodecObject *codec, int vnet_hdr, int gso, int nsenders,
                        fp_counters *counters, fp_outbox *out)
{
    cap->sends = PyList_New(0);
    cap->writes = PyList_New(0);
    cap->slow = PyList_New(0);
    cap->failed = 0;
    cap->path = (fp_path){&codec->codec, counters, vnet_hdr, gso, nsenders, out,
                          capture_tun_write, capture_flush, capture_slow, cap};
    return cap->sends && cap->writes && cap->slow ? 0 : -1;
}

static void capture_close(capture *cap)
{
    Py_XDECREF(cap->sends);
    Py_XDECREF(cap->writes);
    Py_XDECREF(cap->slow);
}

/* (sends, writes, slow, counters) of a capture, or NULL */
static PyObject *capture_result(capture *cap, const fp_counters *counters)
{
    if (cap->failed) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return NULL;
    }
    PyObject *c = counters_dict(counters);
    if (!c)
        return NULL;
    return Py_BuildValue("OOON", cap->sends, cap->writes, cap->slow, c);
}

/* tun_read(meta, buf, n, nsenders, vnet_hdr, gso): one TUN read, as the I/O thread
 * processes it (buf: the headroom, then the packet), with everything it sends captured */
static PyObject *Codec_tun_read(CodecObject *self, PyObject *args)
{
    Py_buffer meta;
    PyObject *obj;
    int n, nsenders, vnet_hdr, gso;
    if (!check_ready(self) || !PyArg_ParseTuple(args, "y*Oiipp", &meta, &obj, &n, &nsenders,
                                                &vnet_hdr, &gso))
        return NULL;
    PyObject *result = NULL;
    Py_buffer view = {0};
    fp_outbox out = {0};
    capture cap = {0};
    fp_counters counters = {0};
    int longest = n > 10 ? n : 10;
    if (vnet_hdr && meta.len != FP_VNET_HDR_LEN) {
        PyErr_SetString(PyExc_ValueError, "meta must be a 10-byte virtio-net header");
        goto done;
    }
    if (nsenders < 1 || nsenders > FP_MAX_SENDERS || n < 0) {
        PyErr_SetString(PyExc_ValueError, "bad nsenders or n");
        goto done;
    }
    if (get_buffer(obj, &view, (Py_ssize_t)self->codec.headroom + longest))
        goto done;
    if (fp_outbox_init(&out)) {
        PyErr_NoMemory();
        goto done;
    }
    if (capture_open(&cap, self, vnet_hdr, gso, nsenders, &counters, &out))
        goto done;
    fp_tun_packet(&cap.path, meta.buf, view.buf, n);
    capture_flush(&cap.path);
    result = capture_result(&cap, &counters);
done:
    capture_close(&cap);
    fp_outbox_free(&out);
    if (view.buf)
        PyBuffer_Release(&view);
    PyBuffer_Release(&meta);
    return result;
}

/* deliver(buf, n, segment, src, vnet_hdr): one received group, as the I/O thread
 * delivers it, with every TUN write captured; buf needs room for a whole last segment */
static PyObject *Codec_deliver(CodecObject *self, PyObject *args)
{
    PyObject *obj;
    unsigned int n, segment;
    unsigned long src;
    int vnet_hdr;
    if (!check_ready(self) || !PyArg_ParseTuple(args, "OIIkp", &obj, &n, &segment, &src,
                                                &vnet_hdr))
        return NULL;
    if (!segment) {
        PyErr_SetString(PyExc_ValueError, "segment must be positive");
        return NULL;
    }
    Py_buffer view;
    uint64_t rows = (n + (uint64_t)segment - 1) / segment;
    if (get_buffer(obj, &view, (Py_ssize_t)(rows * segment)))
        return NULL;
    capture cap = {0};
    fp_counters counters = {0};
    PyObject *result = NULL;
    if (!capture_open(&cap, self, vnet_hdr, 1, 1, &counters, NULL)) {
        fp_deliver(&cap.path, view.buf, n, segment, (uint32_t)src);
        result = capture_result(&cap, &counters);
    }
    capture_close(&cap);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef Codec_methods[] = {
    {"add", (PyCFunction)Codec_add, METH_VARARGS,
     "add(net, ip, port, header=b''): the peer subnet `net` (its network address as an int)"
     " is reached at ip:port, behind `header` (VXLAN)"},
    {"remove", (PyCFunction)Codec_remove, METH_VARARGS, "remove(net)"},
    {"from_tun", (PyCFunction)Codec_from_tun, METH_VARARGS,
     "from_tun(buf, n) -> (action, reason, flow, ip, port)"},
    {"from_net", (PyCFunction)Codec_from_net, METH_VARARGS,
     "from_net(buf, n, src) -> (action, reason, length, checksums_completed)"},
    {"tun_read", (PyCFunction)Codec_tun_read, METH_VARARGS,
     "tun_read(meta, buf, n, nsenders, vnet_hdr, gso) -> (sends, writes, slow, counters)"},
    {"deliver", (PyCFunction)Codec_deliver, METH_VARARGS,
     "deliver(buf, n, segment, src, vnet_hdr) -> (sends, writes, slow, counters)"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Codec_sequence = {.sq_length = (lenfunc)Codec_len};

static PyTypeObject CodecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "backends._fastpath.Codec",
    .tp_basicsize = sizeof(CodecObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Codec(kind, own_net, subnet_len, mtu, vni=0, own_mac=None): the peer table "
              "and the decisions of the udp (kind 0) or VXLAN (kind 1) codec",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Codec_init,
    .tp_dealloc = (destructor)Codec_dealloc,
    .tp_methods = Codec_methods,
    .tp_as_sequence = &Codec_sequence,
};

/* ---- Engine --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    fp_engine *engine;
    PyObject *codec;
} EngineObject;

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"codec", "tun_fd", "listen_fd", "senders", "vnet_hdr", "gso",
                             "gro", NULL};
    PyObject *codec, *senders;
    int tun_fd, listen_fd, vnet_hdr, gso, gro;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!iiOppp", kwlist, &CodecType, &codec,
                                     &tun_fd, &listen_fd, &senders, &vnet_hdr, &gso, &gro))
        return -1;
    if (self->engine) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is already initialised");
        return -1;
    }
    if (!check_ready((CodecObject *)codec))
        return -1;
    PyObject *seq = PySequence_Fast(senders, "senders must be a sequence of fds");
    if (!seq)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    int fds[FP_MAX_SENDERS];
    if (count < 1 || count > FP_MAX_SENDERS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "1 to %d senders, not %zd", FP_MAX_SENDERS, count);
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        fds[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (fds[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    self->engine = fp_engine_new(&((CodecObject *)codec)->codec, tun_fd, listen_fd, fds,
                                 (int)count, vnet_hdr, gso, gro);
    if (!self->engine) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(codec);
    self->codec = codec;
    return 0;
}

static void Engine_dealloc(EngineObject *self)
{
    if (self->engine) {
        Py_BEGIN_ALLOW_THREADS
        fp_engine_free(self->engine);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(self->codec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int engine_ready(EngineObject *self)
{
    if (!self->engine) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *Engine_start(EngineObject *self, PyObject *unused)
{
    (void)unused;
    if (!engine_ready(self))
        return NULL;
    int error = fp_engine_start(self->engine);
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_stop(EngineObject *self, PyObject *unused)
{
    (void)unused;
    if (!engine_ready(self))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    fp_engine_stop(self->engine);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Engine_take_slow(EngineObject *self, PyObject *unused)
{
    (void)unused;
    if (!engine_ready(self))
        return NULL;
    fp_slow *item = fp_engine_take_slow(self->engine);
    PyObject *list = PyList_New(0);
    while (item) {
        fp_slow *next = item->next;
        if (list) {
            PyObject *entry = Py_BuildValue("iy#y#I", item->kind, (const char *)item->meta,
                                            (Py_ssize_t)FP_VNET_HDR_LEN,
                                            (const char *)item->data, (Py_ssize_t)item->len,
                                            item->src);
            if (!entry || PyList_Append(list, entry))
                Py_CLEAR(list);
            Py_XDECREF(entry);
        }
        free(item);
        item = next;
    }
    return list;
}

static PyObject *Engine_take_events(EngineObject *self, PyObject *unused)
{
    (void)unused;
    if (!engine_ready(self))
        return NULL;
    return PyLong_FromLong(fp_engine_take_events(self->engine));
}

static PyObject *Engine_counters(EngineObject *self, PyObject *unused)
{
    (void)unused;
    if (!engine_ready(self))
        return NULL;
    fp_counters sum;
    fp_engine_counters(self->engine, &sum);
    return counters_dict(&sum);
}

static PyObject *Engine_get_slow_fd(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self))
        return NULL;
    return PyLong_FromLong(fp_engine_slow_fd(self->engine));
}

static PyObject *Engine_get_gso(EngineObject *self, void *closure)
{
    (void)closure;
    if (!engine_ready(self))
        return NULL;
    return PyBool_FromLong(fp_engine_gso(self->engine));
}

static PyMethodDef Engine_methods[] = {
    {"start", (PyCFunction)Engine_start, METH_NOARGS, "start the I/O thread"},
    {"stop", (PyCFunction)Engine_stop, METH_NOARGS, "stop it and wait for it"},
    {"take_slow", (PyCFunction)Engine_take_slow, METH_NOARGS,
     "the packets waiting for the Python codec: [(kind, meta, data, src)], oldest first"},
    {"take_events", (PyCFunction)Engine_take_events, METH_NOARGS,
     "what happened since the last call: bit 0, the kernel refused UDP GSO"},
    {"counters", (PyCFunction)Engine_counters, METH_NOARGS, "the counters of both directions, summed"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"slow_fd", (getter)Engine_get_slow_fd, NULL, "an eventfd, readable when slow packets wait",
     NULL},
    {"gso", (getter)Engine_get_gso, NULL, "UDP GSO sends still in use", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "backends._fastpath.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine(codec, tun_fd, listen_fd, senders, vnet_hdr, gso, gro)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "backends._fastpath",
    "The native fast path of the udp and userspace VXLAN data planes.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&CodecType) < 0 || PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Codec", (PyObject *)&CodecType)
        || PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType)
        || PyModule_AddIntConstant(m, "UDP", FP_UDP)
        || PyModule_AddIntConstant(m, "VXLAN", FP_VXLAN)
        || PyModule_AddIntConstant(m, "SLOW", FP_SLOW)
        || PyModule_AddIntConstant(m, "SLOW_TUN", FP_SLOW_TUN)
        || PyModule_AddIntConstant(m, "SLOW_NET", FP_SLOW_NET)
        || PyModule_AddIntConstant(m, "DROP_REASONS", FP_DROP_REASONS)
        || PyModule_AddIntConstant(m, "MAX_CUT", FP_MAX_CUT)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
