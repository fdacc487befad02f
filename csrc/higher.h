/* Terms of derivative graphs (higher.c), for the create_graph sweep (sweep.c). */
#ifndef AG_HIGHER_H
#define AG_HIGHER_H

#include <stddef.h>
#include "ag.h"

/* A node (holding one reference) or, when node is 0, the number `constant`. */
typedef struct ag_term {
    ag_id node;
    double constant;
} ag_term;

ag_term ag_term_number(double x);
ag_term ag_term_node(ag_id id);       /* takes a new reference */
ag_term ag_term_copy(ag_term t);      /* another reference to the same term */
void ag_term_release(ag_term t);
int ag_term_failed(ag_term t);        /* memory ran out making it */
ag_term ag_term_add(ag_term a, ag_term b);  /* takes both references */
ag_term ag_term_mul(ag_term a, ag_term b);

/* contribution[k] = g * d node / d input k for each of the node's n inputs, as terms
 * (taking g's reference); AG_ENOMEM with nothing owned on failure. */
int ag_chain_terms(ag_id node, ag_term g, ag_term *contribution, size_t n);

#endif
