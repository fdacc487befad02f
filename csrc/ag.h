/* pyautograd's C API for cffi: what Python calls through pyautograd._ag.lib.
 *
 * This header is also the cffi cdef (build_ext.py reads it and drops the `#` lines),
 * so it stays plain C declarations. It holds no function that makes a node or takes a
 * reference: those hand their node to its owner inside one call, through the Value
 * type (value.c, graph.c), so a node never sits in a Python int (invariant 7). The
 * functions here that take node ids check them. Functions that return int return an
 * AG_* status, 0 meaning success.
 *
 * Threads: the GIL is the arena's lock. build_ext.py compiles every wrapper so that
 * it keeps the GIL during the call, so no two calls ever run at once. Flags and error
 * state are per thread, like torch.no_grad.
 */
#ifndef AG_H
#define AG_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t ag_id;  /* a node; 0 is never one */

enum ag_status {
    AG_OK = 0,
    AG_ENOMEM = 1,     /* the arena or a scratch buffer could not grow */
    AG_EANOMALY = 2,   /* detect_anomaly: an op produced nan or inf */
    AG_EINVALID = 3,   /* bad arguments (e.g. an id that is not a live node) */
    AG_EPYTHON = 4,    /* a Python _backward raised; its exception is set */
    AG_ENOREPLAY = 5,  /* forward(): the graph holds a node made by hand */
    AG_EPYRULE = 6,    /* grad(create_graph=True): a node's derivative is a Python function */
    AG_EBUSY = 7,      /* backward()/grad() met a node that a running sweep with Python rules
                          owns (another thread's, or one this call is nested in) */
    AG_ECHOSEN = 8     /* forward(): the graph holds a derivative built for the values of
                          the time (a branch of pow's derivative was picked) */
};

/* The op table (csrc/ops.h), for the Python facade. */
int ag_op_count(void);
const char *ag_op_name(int op);    /* Python-facing name: "add", "relu", ... */
const char *ag_op_symbol(int op);  /* what `_op` shows: "+", "ReLU", ... */
int ag_op_arity(int op);           /* 0 leaf, 1 unary, 2 binary, -1 any */
const char *ag_op_python(int op);  /* how Python reaches it: "nb_add", "method", "internal", "" */

/* Per-thread modes (pyautograd.no_grad, pyautograd.detect_anomaly). */
void ag_set_grad_enabled(int enabled);
int ag_grad_enabled(void);
void ag_set_anomaly_mode(int enabled);
int ag_anomaly_mode(void);

/* Per-thread error details for the last failed call. */
int ag_last_error(void);
double ag_error_value(void); /* AG_EANOMALY: the nan or inf produced */

/* Introspection. */
size_t ag_live_nodes(void);
size_t ag_capacity(void);      /* node slots held */
size_t ag_arena_bytes(void);   /* bytes held for node slots, n-ary input lists and caches */
size_t ag_node_size(void);     /* sizeof one node */
void ag_set_node_limit(size_t max_nodes);  /* 0: no limit; for MemoryError tests */

/* In a fork child (engine.py registers it with os.register_at_fork): finishes the free
 * loop another thread was running when the process forked, and resets the sweeps other
 * threads were running (arena.c says what each leaves). Does nothing unless the process
 * really forked since the last call. */
void ag_after_fork_in_child(void);

/* Optimizers (csrc/optim.c, pyautograd.optim): one call updates every parameter in
 * params (ids a NodeList owns), torch.optim's updates. The state buffers hold n doubles
 * each and belong to the caller. AG_EINVALID, with nothing changed, if an id is not a
 * live node. */
int ag_zero_grads(const ag_id *params, size_t n);
int ag_sgd_step(const ag_id *params, size_t n, double lr, double momentum, double weight_decay,
                double *momentum_buffer, int first_step);  /* buffer may be NULL if momentum is 0 */
int ag_adam_step(const ag_id *params, size_t n, double lr, double beta1, double beta2, double eps,
                 double weight_decay, int decoupled, long long *steps_taken, double *exp_avg,
                 double *exp_avg_sq);  /* counts *steps_taken up itself; decoupled: AdamW's decay */

#endif
