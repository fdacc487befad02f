/* What pyautograd.nn needs in C: a whole Layer applied to one input in one call.
 *
 * It makes exactly the nodes Neuron.__call__ makes one neuron at a time (a dot node,
 * bias first, then a relu node when the neuron is nonlinear), so the graph, its values
 * and its gradients are the same; only the trips between Python and C are fewer.
 * Its dot nodes hold their weights through the neurons' rows (ag_row, arena.h).
 * Not here: the parameters themselves (they are ordinary leaves) or any state.
 */
#include "arena.h"
#include "core.h"
#include "nodes.h"

int ag_layer(ag_row *const *rows, const uint8_t *nonlin, size_t nout, const ag_id *xs, ag_id *out)
{
    for (size_t j = 0; j < nout; j++) {
        ag_id act = ag_dot_row(rows[j], xs);
        if (act && nonlin[j]) {
            ag_id activated = ag_apply(AG_RELU, act, 0);
            ag_release(act); /* the relu node holds it now */
            act = activated;
        }
        if (!act) {
            int status = ag_last_error();
            for (size_t k = 0; k < j; k++)
                ag_release(out[k]);
            return status ? status : AG_ENOMEM;
        }
        out[j] = act;
    }
    return AG_OK;
}
