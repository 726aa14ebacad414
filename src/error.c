/* error.c: error names and messages, generated from SM_ERRNO_MAP. */
#include "config.h"

#include "statemesh.h"

SM_API const char *sm_strerror(int err)
{
    switch (err) {
    case SM_OK:
        return "success";
#define SM__ERR_CASE(name, val, text)                                                              \
    case SM_E##name:                                                                               \
        return text;
        SM_ERRNO_MAP(SM__ERR_CASE)
#undef SM__ERR_CASE
    }
    return "unknown error";
}

SM_API const char *sm_errname(int err)
{
    switch (err) {
    case SM_OK:
        return "SM_OK";
#define SM__ERR_NAME(name, val, text)                                                              \
    case SM_E##name:                                                                               \
        return "SM_E" #name;
        SM_ERRNO_MAP(SM__ERR_NAME)
#undef SM__ERR_NAME
    }
    return "SM_E?";
}

SM_API const char *sm_version(void)
{
    return PACKAGE_VERSION;
}
