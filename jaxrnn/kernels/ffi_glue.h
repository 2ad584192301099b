// FFI glue: how a kernel is declared, bound and checked.
//
// Each handler's operands are listed once, in order, by a macro taking three macros:
//   #define JAXRNN_LSTM_FORWARD(ARG, RET, ATTR) ARG(F32, x) ... RET(F32, hs) ... ATTR(bool, masked)
// From that one list come the kernel function's parameters (JAXRNN_KERNEL), the FFI binding and
// an exported string naming the operands in order, "<target>_operands", which Python's
// ops._call reads so that it passes every operand by name (JAXRNN_HANDLER).
//
// Shapes checks every buffer a kernel touches against the others before any is read or
// written; the first mismatch is an InvalidArgument error naming the target, the operand, the
// expected shape in symbols and numbers, and where the symbols came from:
//   jaxrnn_gru_forward: w_h must be (H, 3 * H) = (64, 192), got (8, 24) [T, B, F from x; H from h0]

#ifndef JAXRNN_KERNELS_FFI_GLUE_H_
#define JAXRNN_KERNELS_FFI_GLUE_H_

#include <climits>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The hot helpers are forced inline: GCC's inliner works to a budget per translation unit, and
// a unit that ran out of it called the exp and the micro-products out of line (2x slower).
#define JAXRNN_INLINE inline __attribute__((always_inline))

#define JAXRNN_P_ARG(T, n) , ffi::Buffer<ffi::T> n
#define JAXRNN_P_RET(T, n) , ffi::ResultBuffer<ffi::T> n
#define JAXRNN_P_ATTR(T, n) , T n
#define JAXRNN_B_ARG(T, n) .Arg<ffi::Buffer<ffi::T>>()
#define JAXRNN_B_RET(T, n) .Ret<ffi::Buffer<ffi::T>>()
#define JAXRNN_B_ATTR(T, n) .Attr<T>(#n)
#define JAXRNN_S_ARG(T, n) "arg:" #n ","
#define JAXRNN_S_RET(T, n) "ret:" #n ","
#define JAXRNN_S_ATTR(T, n) "attr:" #T ":" #n ","

// The head of a kernel: ffi::Error Name(ffi::ThreadPool pool, <the operands in their order>).
#define JAXRNN_KERNEL(Name, OPERANDS) \
  ffi::Error Name(ffi::ThreadPool pool OPERANDS(JAXRNN_P_ARG, JAXRNN_P_RET, JAXRNN_P_ATTR))

// At file scope, after the kernel: the exported handler and its operand list.
#define JAXRNN_HANDLER(symbol, Name, OPERANDS)                                               \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, Name,                                              \
                                ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()                    \
                                    OPERANDS(JAXRNN_B_ARG, JAXRNN_B_RET, JAXRNN_B_ATTR));  \
  extern "C" __attribute__((visibility("default"))) const char* symbol##_operands() {      \
    return OPERANDS(JAXRNN_S_ARG, JAXRNN_S_RET, JAXRNN_S_ATTR) "";                          \
  }


namespace {

template <ffi::DataType D>
ffi::Span<const int64_t> dims_of(ffi::Buffer<D>& b) { return b.dimensions(); }
template <ffi::DataType D>
ffi::Span<const int64_t> dims_of(ffi::Result<ffi::Buffer<D>>& b) { return b->dimensions(); }

inline std::string spell(ffi::Span<const int64_t> d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

class Shapes {
 public:
  Shapes(const char* target, const char* origin) : target_(target), origin_(origin) {}

  // Extent `axis` of an operand that must have rank `rank` (0 after a failed check).
  template <class Buf>
  int64_t dim(Buf& buf, const char* name, size_t rank, size_t axis) {
    const auto d = dims_of(buf);
    if (d.size() != rank) {
      fail(std::string(name) + " must have rank " + std::to_string(rank) + ", got shape " + spell(d));
      return 0;
    }
    if (d[axis] > INT_MAX) fail(std::string(name) + " is too large: " + spell(d));
    return d[axis];
  }

  template <class Buf>
  void expect(Buf& buf, const char* name, const char* spelled, std::initializer_list<int64_t> want) {
    const auto d = dims_of(buf);
    bool same = d.size() == want.size();
    for (size_t i = 0; same && i < d.size(); ++i) same = d[i] == want.begin()[i];
    if (same) return;
    const std::vector<int64_t> w(want);
    fail(std::string(name) + " must be " + spelled + " = " +
         spell(ffi::Span<const int64_t>(w.data(), w.size())) + ", got " + spell(d));
  }

  void require(bool holds, const std::string& what) {
    if (!holds) fail(what);
  }

  bool ok() const { return error_.empty(); }
  ffi::Error error() const {
    return ok() ? ffi::Error::Success()
                : ffi::Error(ffi::ErrorCode::kInvalidArgument, error_);
  }

 private:
  void fail(const std::string& what) {
    if (ok()) error_ = std::string(target_) + ": " + what + " [" + origin_ + "]";
  }
  const char* target_;
  const char* origin_;
  std::string error_;
};

// s.expect for an operand, its name and shape spelled from the source: JAXRNN_EXPECT(s, h0, B, H)
#define JAXRNN_EXPECT(s, buf, ...) (s).expect(buf, #buf, "(" #__VA_ARGS__ ")", {__VA_ARGS__})

}  // namespace

#endif  // JAXRNN_KERNELS_FFI_GLUE_H_
