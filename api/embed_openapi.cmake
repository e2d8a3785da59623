# Turn docs/openapi.yaml into a C array (api_openapi_yaml, api_openapi_len).
file(READ ${SRC} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE ${OUT} "/* generated from docs/openapi.yaml */\n#include <stddef.h>\nconst char api_openapi_yaml[] = {${body}0};\nconst size_t api_openapi_len = ${len};\n")
