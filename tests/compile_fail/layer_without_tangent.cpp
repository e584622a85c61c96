// SPDX-License-Identifier: MIT
// Must NOT compile: a user's layer without the tangent of its backward pass, put into a
// network. The message names the missing member, so a user sees what to add.
// expected-error: bilevel layer: needs `void tangent_backward
#include <bilevel/eigen.hpp>
#include <bilevel/learners/layers/any_layer.hpp>

using P = bilevel::policy::eigen<double>;
using namespace bilevel::learners;

struct half_layer {
  struct cache {};
  geometry shape;
  geometry input_shape() const { return shape; }
  geometry output_shape() const { return shape; }
  std::size_t num_parameters() const { return 0; }
  void forward(const pass_context<P>&, const P::matrix& x, P::matrix& y, cache&) const { y = x; }
  void backward(const pass_context<P>&, const P::matrix&, const P::matrix& g, cache&, P::matrix* gx, P::vector&) const {
    if (gx) *gx = g;
  }
  void tangent_forward(const tangent_context<P>&, const P::matrix&, const P::matrix* xd, cache&, P::matrix& yd) const {
    if (xd) yd = *xd;
  }
  // no tangent_backward
};

int main() {
  any_layer<P> l = half_layer{{1, 1, 2}};
  (void)l;
}
