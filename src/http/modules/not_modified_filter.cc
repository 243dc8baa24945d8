// Placeholder: being written.
#include "conf/module.h"

namespace gatehouse::http {
extern const conf::Module not_modified_filter_module{.name = "not_modified_filter"};
}  // namespace gatehouse::http
