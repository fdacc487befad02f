/* Internal: what sweep.c needs from nodes.c. */
#ifndef AG_NODES_H
#define AG_NODES_H

#include "arena.h"

/* The value of a node of op `op` from its inputs, reached by address (in[0..n)):
 * the one definition of every op's forward. Making a node (nodes.c) and replaying a
 * graph (sweep.c) both compute through it, which keeps replay bitwise equal to
 * rebuilding. Leaves, constants and custom nodes keep their own data (`own`). */
static inline double ag_value_from(int op, ag_node *const *in, size_t n, double own)
{
    switch (op) {
    case AG_LEAF:
    case AG_CONST:
    case AG_CUSTOM:
        return own;
    case AG_SUM: {
        double acc = n ? in[0]->data : 0.0;
        for (size_t i = 1; i < n; i++)
            acc += in[i]->data;
        return acc;
    }
    case AG_DOT: {
        /* Same order as micrograd's sum(w*x for ..., b): bias first, then each product. */
        double acc = (n & 1) ? in[n - 1]->data : 0.0;
        for (size_t i = 0; i + 1 < n; i += 2)
            acc += in[i]->data * in[i + 1]->data;
        return acc;
    }
    default:
        return ag_forward_elementwise(op, in[0]->data, n > 1 ? in[1]->data : 0.0);
    }
}

#endif
