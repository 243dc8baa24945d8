// Functions that must not be used in src/: unbounded copies and error-blind
// conversions. The build force-includes this header (-include) before
// anything else; it pulls in the C headers that declare them, then poisons
// the names, so any later use fails to compile. Use snprintf, std::string,
// std::from_chars instead.
#pragma once

#include <cstdio>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cstdlib>
#include <cstring>
#include <string>

#pragma GCC poison sprintf vsprintf strcpy strcat atoi atol atoll gets
