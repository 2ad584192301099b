// The fused CPU sequence kernels (XLA FFI custom calls), one source per cell family: lstm.cc,
// gru.cc, elman.cc, jordan.cc, minimal.cc, and outer.cc for the products around them. Each is
// its own translation unit with its own copy of what this header gathers (everything is in an
// unnamed namespace), so that GCC's per-unit inlining budget of one family is not spent by
// another's.
//
// Why they exist: inside `lax.scan`, XLA's CPU while loop costs about as much per step as the
// recurrent product itself. A kernel runs the whole time loop in one call: each step is two
// small products (input and recurrent, products.h) and one elementwise pass (activations.h),
// with no per-step dispatch. The input projection is done per step rather than for all steps
// first (a (T, B, G) buffer costs more in page faults and memory traffic than batching saves).
// The backward kernels leave the weight gradients to outer.cc: one product over all steps each.
//
// Values never depend on the thread count or the CPUs the process may use: each output of a
// product is summed over k in one fixed order however the work is split, and the products and
// sums around the recurrences that XLA would split by its pool size are the kernels' own.
//
// Layouts are row-major and time-major: x (T, B, F), hs (T, B, H), weights (F, G) and (H, G)
// with the gate blocks side by side in the order the Python cells use, biases (G,).
//
// What is where:
//   ffi_glue.h     operand lists, handler macros, shape checks with named errors
//   products.h     the register tile per ISA, micro-kernels, packed weights, row/unit products
//   activations.h  exp, sigmoid, tanh: vectorisable, NaN- and inf-preserving
//   team.h         team primitives: waits, spreading members over CPUs, JAXRNN_KERNEL_THREADS
//   phase_team.h   the unit split's scheduler: phases with a barrier, stall detection
//   row_team.h     the row split's scheduler: row groups without a barrier, handover
//   tuner.h        the plan table: each shape class's plan, measured on its first calls
//   plan.h         which team and split a call gets (the table's, or the rules'), drive()
//   members.h      leading member axes: one call per vmapped ensemble (JAXRNN_MEMBER_HANDLER)
// Helpers that not every unit uses are [[maybe_unused]] (each unit has its own copy).
// Two schedulers because the two splits need different things: the unit split a barrier per
// step, the row split none, and a handover of whole row groups that a barrier cannot express.

#ifndef JAXRNN_KERNELS_COMMON_H_
#define JAXRNN_KERNELS_COMMON_H_

#include "activations.h"
#include "ffi_glue.h"
#include "members.h"
#include "phase_team.h"
#include "plan.h"
#include "products.h"
#include "row_team.h"
#include "team.h"
#include "tuner.h"

#endif  // JAXRNN_KERNELS_COMMON_H_
