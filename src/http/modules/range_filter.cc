// Placeholder: being written.
#include "conf/module.h"

namespace gatehouse::http {
extern const conf::Module range_filter_module{.name = "range_filter"};
}  // namespace gatehouse::http
