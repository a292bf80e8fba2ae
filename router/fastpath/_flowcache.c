/*
 * The fast path for established flows: a flow cache that only repeats decisions the Python data plane made.
 *
 * Python (router/fastpath/) installs an entry per established session or VPN flow and direction: its key (the
 * frame's port, protocol, addresses, ports and, for VPN data, the Call ID, SPI or Tunnel ID) and the rewrite
 * Python did to the last frame it forwarded: the new address and port, the RFC 1624 checksum deltas, the next
 * hop's Ethernet addresses, a payload ID to restore.  ``forward`` (one frame, sans-IO) and ``drain`` (a TAP
 * read until it is empty: read, look up, rewrite in place, write) handle a frame only if it passes every check
 * the Python path makes before that same rewrite (forward.c); anything else is a miss, handed to Python
 * untouched.  Nothing here makes a decision or allocates per frame.
 *
 * What Python reads back (``sync``): per entry used since the last sync, the session or flow it counts for,
 * frames, segments (a GSO super-frame counts as the packets it stands for), IP bytes, payload bytes (an L2TP
 * message's length) and the time of the last frame; per port, the frames and bytes received; and ``stats``.
 */

#include <errno.h>
#include <unistd.h>

#include "flowcache.h"

static int parse_key(PyObject *tuple, Key *k) {
    unsigned port, proto, sport, dport;
    unsigned long src, dst, id;
    if (!PyTuple_Check(tuple)) {
        PyErr_SetString(PyExc_TypeError, "key: (port, proto, src, sport, dst, dport, id)");
        return -1;
    }
    if (!PyArg_ParseTuple(tuple, "IIkIkIk;key: (port, proto, src, sport, dst, dport, id)", &port, &proto, &src,
                          &sport, &dst, &dport, &id))
        return -1;
    if (port > 1 || proto > 255 || sport > 65535 || dport > 65535 || src > 0xFFFFFFFFul || dst > 0xFFFFFFFFul ||
        id > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "key: a value out of range");
        return -1;
    }
    *k = (Key){.port = (uint8_t)port, .proto = (uint8_t)proto, .src = (uint32_t)src, .dst = (uint32_t)dst,
               .sport = (uint16_t)sport, .dport = (uint16_t)dport, .id = (uint32_t)id};
    return 0;
}

/* An entry's owners from a tuple of at most OWNERS objects (strong references taken). */
static int take_owners(Entry *e, PyObject *owners) {
    if (!PyTuple_Check(owners) || PyTuple_GET_SIZE(owners) > OWNERS) {
        PyErr_Format(PyExc_ValueError, "owners: a tuple of at most %d objects", OWNERS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(owners); i++) {
        e->owner[i] = PyTuple_GET_ITEM(owners, i);
        Py_INCREF(e->owner[i]);
    }
    return 0;
}

static PyObject *FlowCache_install(FlowCache *fc, PyObject *args) {
    PyObject *key, *target, *helper, *owners;
    int out_port, addr_at, l4, port_at, restore, count_payload, flags;
    unsigned long addr;
    unsigned port, ip_delta, l4_delta, addr_delta, restore_at, restore_value;
    Py_buffer eth;
    double arp_expires;
    if (!PyArg_ParseTuple(args, "Oiy*ikIiiIIIiIIpdOiOO:install", &key, &out_port, &eth, &addr_at, &addr,
                          &ip_delta, &l4, &port_at, &port, &l4_delta, &addr_delta, &restore, &restore_at,
                          &restore_value, &count_payload, &arp_expires, &target, &flags, &helper, &owners))
        return NULL;
    int bad = eth.len != 12 || (out_port != 0 && out_port != 1) || (addr_at != 12 && addr_at != 16) ||
              (l4 != 0 && l4 != PROTO_TCP && l4 != PROTO_UDP && l4 != PROTO_ICMP) || port_at < -1 || port_at > 4 ||
              port > 65535 || ip_delta > 65535 || l4_delta > 65535 || addr_delta > 65535 || restore < 0 ||
              restore > RESTORE_SPLIT_ID || restore_at > 64 || restore_value > 65535 || addr > 0xFFFFFFFFul ||
              flags < 0 || flags > 3;
    Entry *e = bad ? NULL : PyMem_Calloc(1, sizeof(Entry));
    if (e != NULL)
        memcpy(e->eth, eth.buf, 12);
    PyBuffer_Release(&eth);
    if (e == NULL)
        return bad ? (PyErr_SetString(PyExc_ValueError, "install: a value out of range"), NULL) : PyErr_NoMemory();
    if (parse_key(key, &e->key) < 0 || take_owners(e, owners) < 0) {
        entry_release(e);
        return NULL;
    }
    e->out_port = (uint8_t)out_port;
    e->addr_at = (uint8_t)addr_at;
    for (int i = 0; i < 4; i++)
        e->addr[i] = (uint8_t)(addr >> (24 - 8 * i));
    e->l4 = (uint8_t)l4;
    e->port_at = (int8_t)port_at;
    e->port = (uint16_t)port;
    e->ip_delta = (uint16_t)ip_delta;
    e->l4_delta = (uint16_t)l4_delta;
    e->addr_delta = (uint16_t)addr_delta;
    e->restore = (uint8_t)restore;
    e->restore_at = (uint8_t)restore_at;
    e->restore_value = (uint16_t)restore_value;
    e->count_payload = (uint8_t)count_payload;
    e->flags = (uint8_t)flags;
    e->arp_expires = arp_expires;
    Py_INCREF(target);
    e->target = target;
    if (helper != Py_None) {
        Py_INCREF(helper);
        e->helper = helper;
    }
    if (table_insert(fc, e) < 0) {
        entry_release(e);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *FlowCache_marker(FlowCache *fc, PyObject *args) {
    PyObject *key, *owners;
    int split;
    if (!PyArg_ParseTuple(args, "OiO:marker", &key, &split, &owners))
        return NULL;
    if (split != SPLIT_NATT_SPI && split != SPLIT_L2TP_TUNNEL) {
        PyErr_SetString(PyExc_ValueError, "marker: an unknown split");
        return NULL;
    }
    Entry *e = PyMem_Calloc(1, sizeof(Entry));
    if (e == NULL)
        return PyErr_NoMemory();
    if (parse_key(key, &e->key) < 0 || take_owners(e, owners) < 0) {
        entry_release(e);
        return NULL;
    }
    e->marker = 1;
    e->split = (uint8_t)split;
    if (table_insert(fc, e) < 0) {
        entry_release(e);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *FlowCache_remove(FlowCache *fc, PyObject *key) {
    Key k;
    if (parse_key(key, &k) < 0)
        return NULL;
    return PyBool_FromLong(table_remove(fc, &k));
}

static PyObject *FlowCache_withdraw(FlowCache *fc, PyObject *owner) {
    table_withdraw(fc, owner);
    Py_RETURN_NONE;
}

static PyObject *FlowCache_owns(FlowCache *fc, PyObject *owner) {
    return PyBool_FromLong(table_owns(fc, owner));
}

static PyObject *FlowCache_withdraw_mac(FlowCache *fc, PyObject *args) {
    int port;
    Py_buffer mac;
    if (!PyArg_ParseTuple(args, "iy*:withdraw_mac", &port, &mac))
        return NULL;
    size_t n = mac.len == 6 ? table_withdraw_mac(fc, port, mac.buf) : 0;
    PyBuffer_Release(&mac);
    return PyLong_FromSize_t(n);
}

static PyObject *FlowCache_keys(FlowCache *fc, PyObject *unused) { return table_keys(fc); }

static PyObject *FlowCache_clear(FlowCache *fc, PyObject *unused) {
    table_clear(fc);
    Py_RETURN_NONE;
}

static PyObject *FlowCache_forward(FlowCache *fc, PyObject *args) {
    int port;
    PyObject *frame;
    double now;
    if (!PyArg_ParseTuple(args, "iO!d:forward", &port, &PyByteArray_Type, &frame, &now))
        return NULL;
    if (port != 0 && port != 1) {
        PyErr_SetString(PyExc_ValueError, "forward: port 0 or 1");
        return NULL;
    }
    size_t wire = 0;
    int out = forward_frame(fc, port, (uint8_t *)PyByteArray_AS_STRING(frame), (size_t)PyByteArray_GET_SIZE(frame),
                            now, &wire);
    if (out >= 0 && wire < (size_t)PyByteArray_GET_SIZE(frame) && PyByteArray_Resize(frame, (Py_ssize_t)wire) < 0)
        return NULL;
    return PyLong_FromLong(out);
}

/* Whether the cache counted anything since the last sync. */
static inline int counted(const FlowCache *fc) { return fc->dirty != NULL || fc->frames_in[0] || fc->frames_in[1]; }

/* drain(port, fd, out_fd, buffer, now, budget, slow, sync) -> (frames written, bytes written, failed writes,
 * frames read): read ``fd`` until it is empty or ``budget`` frames are read, forwarding what has an entry to
 * ``out_fd``; a frame without one stays in ``buffer`` for ``slow(length)``, Python's, before the next is read,
 * after ``sync()`` if the cache counted anything since the last one. */
static PyObject *FlowCache_drain(FlowCache *fc, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 || !PyByteArray_Check(args[3]) || !PyCallable_Check(args[6]) || !PyCallable_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError, "drain(port, fd, out_fd, buffer, now, budget, slow, sync)");
        return NULL;
    }
    int port = _PyLong_AsInt(args[0]), fd = _PyLong_AsInt(args[1]), out_fd = _PyLong_AsInt(args[2]);
    double now = PyFloat_AsDouble(args[4]);
    long budget = PyLong_AsLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    if (port != 0 && port != 1) {
        PyErr_SetString(PyExc_ValueError, "drain: port 0 or 1");
        return NULL;
    }
    PyObject *buffer = args[3], *slow = args[6], *sync = args[7];
    long read_n = 0, written = 0, failed = 0;
    unsigned long long out_bytes = 0;
    while (read_n < budget) {
        uint8_t *buf = (uint8_t *)PyByteArray_AS_STRING(buffer);
        ssize_t n = read(fd, buf, (size_t)PyByteArray_GET_SIZE(buffer));
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        read_n++;
        size_t wire = 0;
        if (forward_frame(fc, port, buf, (size_t)n, now, &wire) >= 0) {
            if (write(out_fd, buf, wire) == (ssize_t)wire) {
                written++;
                out_bytes += wire;
            } else {
                failed++;
            }
            continue;
        }
        if (counted(fc)) {          /* Python decides on the state as it is */
            PyObject *r = PyObject_CallNoArgs(sync);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
        }
        PyObject *length = PyLong_FromSsize_t(n);
        PyObject *r = length == NULL ? NULL : PyObject_CallOneArg(slow, length);
        Py_XDECREF(length);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    return Py_BuildValue("lKll", written, out_bytes, failed, read_n);
}

/* sync() -> None if nothing was forwarded since the last call, else ([(target, flags, helper, frames, segments,
 * ip bytes, payload bytes, time of the last frame)] of the entries used, (LAN frames in, bytes in, WAN frames in,
 * bytes in)). */
static PyObject *FlowCache_sync(FlowCache *fc, PyObject *unused) {
    if (!counted(fc))
        Py_RETURN_NONE;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    while (fc->dirty != NULL) {
        Entry *e = fc->dirty;
        PyObject *item = Py_BuildValue("(OiOKKKKd)", e->target, e->flags, e->helper ? e->helper : Py_None,
                                       (unsigned long long)e->frames, (unsigned long long)e->segments,
                                       (unsigned long long)e->ip_bytes, (unsigned long long)e->payload_bytes,
                                       e->last_now);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
        fc->dirty = e->next_dirty;
        e->frames = e->segments = e->ip_bytes = e->payload_bytes = 0;
        e->dirty = 0;
        e->next_dirty = NULL;
        if (e->removed)
            entry_release(e);
    }
    PyObject *r = Py_BuildValue("(N(KKKK))", list, (unsigned long long)fc->frames_in[0],
                                (unsigned long long)fc->bytes_in[0], (unsigned long long)fc->frames_in[1],
                                (unsigned long long)fc->bytes_in[1]);
    fc->frames_in[0] = fc->frames_in[1] = fc->bytes_in[0] = fc->bytes_in[1] = 0;
    return r;
}

static PyObject *FlowCache_stats(FlowCache *fc, PyObject *unused) {
    PyObject *misses = PyDict_New();
    if (misses == NULL)
        return NULL;
    for (int i = 0; i < MISS_COUNT; i++) {
        PyObject *n = PyLong_FromUnsignedLongLong(fc->misses[i]);
        if (n == NULL || PyDict_SetItemString(misses, MISS_NAMES[i], n) < 0) {
            Py_XDECREF(n);
            Py_DECREF(misses);
            return NULL;
        }
        Py_DECREF(n);
    }
    return Py_BuildValue("{sKsnsnsN}", "hits", (unsigned long long)fc->hits, "entries", (Py_ssize_t)fc->used,
                         "owners", (Py_ssize_t)fc->owners_used, "misses", misses);
}

static int FlowCache_init(FlowCache *fc, PyObject *args, PyObject *kwds) {
    Py_buffer lan_mac, wan_mac;
    unsigned long lan_ip, lan_mask, wan_ip, wan_mask;
    unsigned mtu_lan, mtu_wan;
    static char *names[] = {"lan_mac", "lan_ip", "lan_mask", "wan_mac", "wan_ip", "wan_mask", "lan_mtu", "wan_mtu",
                            NULL};
    if (fc->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FlowCache: already made");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*kky*kkII:FlowCache", names, &lan_mac, &lan_ip, &lan_mask,
                                     &wan_mac, &wan_ip, &wan_mask, &mtu_lan, &mtu_wan))
        return -1;
    int bad = lan_mac.len != 6 || wan_mac.len != 6;
    if (!bad) {
        memcpy(fc->mac[0], lan_mac.buf, 6);
        memcpy(fc->mac[1], wan_mac.buf, 6);
    }
    PyBuffer_Release(&lan_mac);
    PyBuffer_Release(&wan_mac);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "FlowCache: MAC addresses are 6 bytes");
        return -1;
    }
    fc->lan_ip = (uint32_t)lan_ip;
    fc->lan_mask = (uint32_t)lan_mask;
    fc->lan_net = fc->lan_ip & fc->lan_mask;
    fc->lan_bcast = fc->lan_net | ~fc->lan_mask;
    fc->wan_ip = (uint32_t)wan_ip;
    fc->wan_bcast = (fc->wan_ip & (uint32_t)wan_mask) | ~(uint32_t)wan_mask;
    fc->mtu[0] = mtu_lan;
    fc->mtu[1] = mtu_wan;
    return table_init(fc);
}

static void FlowCache_dealloc(FlowCache *fc) {
    table_free(fc);
    Py_TYPE(fc)->tp_free((PyObject *)fc);
}

static PyMethodDef FlowCache_methods[] = {
    {"install", (PyCFunction)FlowCache_install, METH_VARARGS,
     "install(key, out_port, eth, addr_at, addr, ip_delta, l4, port_at, port, l4_delta, addr_delta, restore, "
     "restore_at, restore_value, count_payload, arp_expires, target, flags, helper, owners): an entry for a flow "
     "Python forwarded, replacing any with its key"},
    {"marker", (PyCFunction)FlowCache_marker, METH_VARARGS,
     "marker(key, split, owners): the flows of this UDP 5-tuple are told apart by an ID in their payload "
     "(1: the NAT-T SPI, 2: the L2TP Tunnel ID)"},
    {"remove", (PyCFunction)FlowCache_remove, METH_O, "remove(key) -> bool: withdraw one entry"},
    {"withdraw", (PyCFunction)FlowCache_withdraw, METH_O, "withdraw(owner): every entry it owns"},
    {"owns", (PyCFunction)FlowCache_owns, METH_O, "owns(owner) -> bool: whether it owns an entry"},
    {"withdraw_mac", (PyCFunction)FlowCache_withdraw_mac, METH_VARARGS,
     "withdraw_mac(port, mac) -> n: every entry that sends out of ``port`` to ``mac``"},
    {"clear", (PyCFunction)FlowCache_clear, METH_NOARGS, "clear(): withdraw every entry"},
    {"keys", (PyCFunction)FlowCache_keys, METH_NOARGS,
     "keys() -> [(port, proto, src, sport, dst, dport, id, marker)]: every entry's key"},
    {"forward", (PyCFunction)FlowCache_forward, METH_VARARGS,
     "forward(port, frame, now) -> out port, or -1: the frame rewritten in place, or untouched"},
    {"drain", (PyCFunction)(void (*)(void))FlowCache_drain, METH_FASTCALL,
     "drain(port, fd, out_fd, buffer, now, budget, slow, sync) -> (written, bytes written, failed writes, read): "
     "the frames with an entry forwarded, each other one handed to slow(length) in turn, after sync()"},
    {"sync", (PyCFunction)FlowCache_sync, METH_NOARGS,
     "sync() -> None, or ([(target, flags, helper, frames, segments, ip_bytes, payload_bytes, last)] of the "
     "entries used since the last sync, (LAN frames in, bytes in, WAN frames in, bytes in))"},
    {"stats", (PyCFunction)FlowCache_stats, METH_NOARGS, "stats() -> {hits, entries, owners, misses by reason}"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FlowCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "router.fastpath._flowcache.FlowCache",
    .tp_basicsize = sizeof(FlowCache),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The flow cache of the fast path: entries Python installed, frames forwarded by them.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FlowCache_init,
    .tp_dealloc = (destructor)FlowCache_dealloc,
    .tp_methods = FlowCache_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_flowcache", .m_doc = "The fast path's flow cache (router/fastpath).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__flowcache(void) {
    if (PyType_Ready(&FlowCacheType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FlowCacheType);
    if (PyModule_AddObject(m, "FlowCache", (PyObject *)&FlowCacheType) < 0 ||
        PyModule_AddIntConstant(m, "SPLIT_NATT_SPI", SPLIT_NATT_SPI) < 0 ||
        PyModule_AddIntConstant(m, "SPLIT_L2TP_TUNNEL", SPLIT_L2TP_TUNNEL) < 0 ||
        PyModule_AddIntConstant(m, "RESTORE_AT", RESTORE_AT) < 0 ||
        PyModule_AddIntConstant(m, "RESTORE_SPLIT_ID", RESTORE_SPLIT_ID) < 0 ||
        PyModule_AddIntConstant(m, "ACCOUNT_OUTBOUND", ACCOUNT_OUTBOUND) < 0 ||
        PyModule_AddIntConstant(m, "ACCOUNT_FLOW", ACCOUNT_FLOW) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
