/* The core's functions for the Python layer (value.c, graph.c), not for cffi.
 *
 * These make nodes or take ids on trust, so Python never calls them directly: the
 * Python layer calls them only with ids it owns, and hands each new node to its owner
 * (a Value, a NodeList) before any bytecode runs (invariant 7). A function that
 * returns an id returns a new node holding one reference, or 0 with ag_last_error()
 * set. Under no_grad an op's result is a leaf with no inputs. */
#ifndef AG_CORE_H
#define AG_CORE_H

#include "ag.h"

struct ag_row; /* a neuron's weights and bias, held once (arena.h) */

/* Making nodes (nodes.c; ag_leaf, ag_apply and ag_apply_const are inline in nodes.h). */
ag_id ag_sum(const ag_id *inputs, size_t n);
ag_id ag_dot(const ag_id *ws, const ag_id *xs, size_t n, ag_id bias);  /* bias 0: none */
/* A layer's dot node: a weight row (n weights and a bias) over an input row (n x's). */
ag_id ag_dot_over_rows(struct ag_row *weights, struct ag_row *xs);
ag_id ag_custom(double data, const ag_id *inputs, size_t n);
ag_id ag_local(double data, const ag_id *inputs, const double *local, size_t n);

/* One Layer applied to one input (nn.c): for neuron j, over its weight row (nin weights
 * and a bias), act = bias + w[i] * xs[i] summed over i < nin (one dot node), then relu
 * when nonlin[j]. out[j] gets the result, holding one reference for the caller. On
 * failure nothing is left behind. */
int ag_layer(struct ag_row *const *rows, const uint8_t *nonlin, size_t nout, size_t nin,
             const ag_id *xs, ag_id *out);

/* Whole-graph work (sweep.c). backward may run Python (AG_EPYTHON: the exception is set). */
int ag_backward(ag_id root);       /* adds d root / d node to every reachable grad */
int ag_backward_step(ag_id node);  /* one node's chain-rule step, micrograd's v._backward() */
int ag_forward(ag_id root);        /* recomputes every node under root from its leaves */
/* d root / d inputs[k] into out[k], new nodes (create_graph: differentiable again). */
int ag_grad(ag_id root, const ag_id *inputs, size_t n_inputs, int create_graph, ag_id *out);
/* Forward mode and second order (tangents.c), reading the op table on tangents and
 * dual numbers; no .grad changes, Python rules refused (AG_EPYRULE). root: the one
 * output, or a node over all of them (a sum), whose graph holds every node swept.
 * jvp: out[k] = d outputs[k] along tangents (one per input); jvp_terms: the same as new
 * nodes holding one reference each, differentiable again; hvp: out[k] = (H vector)_k,
 * H the Hessian of root in the inputs. */
int ag_jvp(ag_id root, const ag_id *outputs, size_t n_outputs, const ag_id *inputs, const double *tangents,
           size_t n_inputs, double *out);
int ag_jvp_terms(ag_id root, const ag_id *outputs, size_t n_outputs, const ag_id *inputs,
                 const double *tangents, size_t n_inputs, ag_id *out);
int ag_hvp(ag_id root, const ag_id *inputs, const double *vector, size_t n_inputs, double *out);
size_t ag_graph_size(ag_id root);  /* nodes reachable from root, root included; 0 on ENOMEM */
/* op_counts[op] (AG_OP_COUNT entries) = nodes made by op, *depth = longest path from
 * root to a leaf, in edges (stats.c). Reads only; AG_ENOMEM on failure. */
int ag_graph_stats(ag_id root, size_t *op_counts, size_t *depth);

/* Labels and hand-made ops' text (labels.c). */
int ag_set_label(ag_id id, const char *label);  /* copies; "" removes */
const char *ag_label(ag_id id);                /* "" when none; valid until the next change */
int ag_set_custom_op(ag_id id, const char *op);
const char *ag_custom_op(ag_id id);

/* The side tables the modules above the arena keep (arena.h), for python.c to register. */
struct ag_side_table;
extern const struct ag_side_table ag_labels_table, ag_sweep_table, ag_tangents_table;

ag_id ag_error_node(void);  /* the node an AG_EANOMALY or AG_ENOREPLAY names */

#endif
