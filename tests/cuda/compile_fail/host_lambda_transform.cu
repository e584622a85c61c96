// SPDX-License-Identifier: MIT
// Must NOT compile: a plain (host) lambda mapped by the CUDA policy without opting in to the
// host round trip (bilevel::elementwise::on_host), which would otherwise cost two transfers
// and a synchronisation per call, silently.
// expected-error: did not opt in to a host round trip
#include <bilevel/policy/cuda.hpp>

using P = bilevel::policy::cuda<float>;

void map(const P::vector& x, P::vector& out) {
  P::transform(x, out, [](float v) { return 2 * v + 1; });
}
