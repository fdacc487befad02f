/* Terms of derivative graphs (higher.c), for the create_graph sweep (grad.c). */
#ifndef AG_HIGHER_H
#define AG_HIGHER_H

#include <stddef.h>
#include <stdint.h>
#include "ag.h"

/* A node or, when node is 0, the number `constant`. A term owns a reference to its
 * node unless `borrowed`: a node of the graph being differentiated, which its root keeps
 * alive for the whole sweep (invariant 2), is used without taking one. */
typedef struct ag_term {
    ag_id node;
    uint32_t borrowed;
    double constant;
} ag_term;

ag_term ag_term_number(double x);
ag_term ag_term_node(ag_id id);       /* takes a new reference */
ag_term ag_term_borrowed(ag_id id);   /* a node the sweep's root keeps alive */
ag_term ag_term_copy(ag_term t);      /* the same term again (another reference if owned) */
ag_id ag_term_own(ag_term t);         /* its node with a new reference (0 for a number) */
void ag_term_release(ag_term t);
int ag_term_failed(ag_term t);        /* memory ran out making it (or an anomaly stopped it) */
ag_term ag_term_failure(void);        /* a failed term */
ag_term ag_term_add(ag_term a, ag_term b);  /* takes both references */
ag_term ag_term_mul(ag_term a, ag_term b);

ag_id ag_constant_node(double x);    /* a CONST node for x, shared within one grad() call */
void ag_constant_nodes_done(void);    /* the end of that call */

/* Whether a derivative built since the last forget picked a branch of a SELECT by
 * values that may change (replay must refuse it); forget: start counting anew. */
int ag_choice_noted(int forget);

/* contribution[k] = g * d node / d input k for each of the node's n inputs, as terms
 * (taking g's reference); AG_ENOMEM with nothing owned on failure. */
int ag_chain_terms(ag_id node, ag_term g, ag_term *contribution, size_t n);

/* What node `id` passes back to its input k alone given g (taking g's reference): the
 * number 0 for a constant input. For forward mode, where each input's g differs. */
ag_term ag_pass_back_one(ag_id id, size_t k, ag_term g);

/* Marks AG_FLAG_CHOSEN on every node a derivative graph made in this call (those the
 * sort did not mark: the graph's own nodes carry AG_FLAG_SORTING then) under out[],
 * when one of its derivatives picked a branch by values that may change. */
int ag_mark_chosen(const ag_id *out, size_t n_out);

#endif
