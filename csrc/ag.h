/* pyautograd's C API: everything the Python package calls.
 *
 * This header is also the cffi cdef (build_ext.py reads it and drops the `#` lines),
 * so it stays plain C declarations. Nodes are named by 32-bit ids; id 0 is never a
 * node, and a function that returns an id returns 0 on failure, with the reason in
 * ag_last_error(). Functions that return int return an AG_* status, 0 meaning success.
 *
 * Threads: the GIL is the arena's lock. build_ext.py compiles every wrapper so that
 * it keeps the GIL during the call, so no two calls ever run at once. Flags and error
 * state are per thread, like torch.no_grad.
 */
#ifndef AG_H
#define AG_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t ag_id;

enum ag_status {
    AG_OK = 0,
    AG_ENOMEM = 1,    /* the arena or a scratch buffer could not grow */
    AG_EANOMALY = 2,  /* detect_anomaly: an op produced nan or inf, see ag_error_node */
    AG_EINVALID = 3   /* bad arguments (e.g. an n-ary op with too many inputs) */
};

/* The op table (csrc/ops.h), for the Python facade. */
int ag_op_count(void);
const char *ag_op_name(int op);    /* Python-facing name: "add", "relu", ... */
const char *ag_op_symbol(int op);  /* what `_op` shows: "+", "ReLU", ... */
int ag_op_arity(int op);           /* 0 leaf, 1 unary, 2 binary, -1 any */

/* Making nodes. Each returns a new node holding one reference (the caller's Value),
 * or 0 with ag_last_error() set. Under no_grad the result is a leaf with no inputs. */
ag_id ag_leaf(double data);
ag_id ag_apply1(int op, ag_id a);
ag_id ag_apply2(int op, ag_id a, ag_id b);
ag_id ag_apply2_const(int op, ag_id a, double constant, int constant_first);
ag_id ag_sum(const ag_id *inputs, size_t n);
ag_id ag_dot(const ag_id *ws, const ag_id *xs, size_t n, ag_id bias);  /* bias 0: none */
ag_id ag_custom(double data, const ag_id *inputs, size_t n);

/* Lifetime: a node lives while it has references (Values and consumer nodes). */
void ag_incref(ag_id id);
void ag_decref(ag_id id);
void ag_decref_many(const ag_id *ids, size_t n);  /* batched, for Values that died */

/* Reading and writing one node. */
double ag_data(ag_id id);
void ag_set_data(ag_id id, double data);
double ag_grad(ag_id id);
void ag_set_grad(ag_id id, double grad);
int ag_op(ag_id id);
size_t ag_input_count(ag_id id);
ag_id ag_input(ag_id id, size_t i);
int ag_set_label(ag_id id, const char *label);  /* copies; "" removes */
const char *ag_label(ag_id id);                /* "" when none; valid until the next label change */
int ag_set_custom_op(ag_id id, const char *op); /* the `_op` text of a Value(data, _children, _op) */
const char *ag_custom_op(ag_id id);

/* Whole-graph work, one call each. */
int ag_backward(ag_id root);   /* adds d root / d node to every reachable grad */
int ag_forward(ag_id root);    /* recomputes every node under root from its leaves */
void ag_zero_grads(const ag_id *ids, size_t n);
size_t ag_graph_size(ag_id root);  /* nodes reachable from root, root included; 0 on ENOMEM */
/* For pyautograd.viz.summary: op_counts[op] (ag_op_count() entries) = nodes made by op,
 * *depth = longest path from root to a leaf, in edges. Reads only; AG_ENOMEM on failure. */
int ag_graph_stats(ag_id root, size_t *op_counts, size_t *depth);

/* Per-thread modes (pyautograd.no_grad, pyautograd.detect_anomaly). */
void ag_set_grad_enabled(int enabled);
int ag_grad_enabled(void);
void ag_set_anomaly_mode(int enabled);
int ag_anomaly_mode(void);

/* Per-thread error details for the last failed call. */
int ag_last_error(void);
ag_id ag_error_node(void);   /* AG_EANOMALY in backward/forward: the node that went non-finite */
double ag_error_value(void); /* AG_EANOMALY: the nan or inf produced */

/* Introspection. */
size_t ag_live_nodes(void);
size_t ag_capacity(void);      /* node slots allocated */
size_t ag_arena_bytes(void);   /* bytes held for node slots, n-ary input lists and caches */
size_t ag_node_size(void);     /* sizeof one node */
void ag_set_node_limit(size_t max_nodes);  /* 0: no limit; for MemoryError tests */

/* Neural nets (csrc/nn.c, pyautograd.nn): one Layer applied to one input, the nodes
 * Neuron.__call__ makes: for neuron j, act = bs[j] + ws[j*nin + i] * xs[i] summed over i
 * (one dot node), then relu when nonlin[j]. out[j] gets the result, holding one reference
 * for the caller. On failure nothing is left behind and the status is returned. */
int ag_layer(const ag_id *ws, const ag_id *bs, const uint8_t *nonlin, size_t nout, size_t nin,
             const ag_id *xs, ag_id *out);

/* Optimizers (csrc/optim.c, pyautograd.optim): one call updates every parameter in
 * params, torch.optim's updates. The state buffers hold n doubles each and belong to
 * the caller (the Python optimizer object), never to the arena. */
int ag_sgd_step(const ag_id *params, size_t n, double lr, double momentum, double weight_decay,
                double *momentum_buffer, int first_step);  /* buffer may be NULL if momentum is 0 */
int ag_adam_step(const ag_id *params, size_t n, double lr, double beta1, double beta2, double eps,
                 double weight_decay, int decoupled, long long step, double *exp_avg,
                 double *exp_avg_sq);  /* step counts from 1; decoupled: AdamW's decay */

#endif
