# External libraries, all from Debian 12 packages (see scripts/install-deps.sh).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
pkg_check_modules(PROTOBUFC REQUIRED IMPORTED_TARGET libprotobuf-c)
pkg_check_modules(GRPC REQUIRED IMPORTED_TARGET grpc gpr)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(YAJL REQUIRED IMPORTED_TARGET yajl)
pkg_check_modules(SQLITE REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(LWS REQUIRED IMPORTED_TARGET libwebsockets)
pkg_check_modules(OPENSSL REQUIRED IMPORTED_TARGET libcrypto)
pkg_check_modules(LIBSSL REQUIRED IMPORTED_TARGET libssl)
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(LIBDEFLATE REQUIRED IMPORTED_TARGET libdeflate)
pkg_check_modules(CMOCKA IMPORTED_TARGET cmocka)

find_program(PROTOC protoc REQUIRED)
find_program(PROTOC_C protoc-c REQUIRED)

# Include paths of the .proto files we use but do not own.
set(ANA_GOOGLEAPIS_PROTO_DIR /usr/share/gocode/src/github.com/gogo/googleapis)
set(ANA_GRPC_PROTO_DIR /usr/share/grpc-proto)
set(ANA_WKT_PROTO_DIR /usr/include)
foreach(f ${ANA_GOOGLEAPIS_PROTO_DIR}/google/api/annotations.proto
          ${ANA_GRPC_PROTO_DIR}/grpc/health/v1/health.proto
          ${ANA_WKT_PROTO_DIR}/google/protobuf/compiler/plugin.proto)
  if(NOT EXISTS ${f})
    message(FATAL_ERROR "${f} is missing: run scripts/install-deps.sh")
  endif()
endforeach()

# Report writers: libxlsxwriter ships a .pc file, libharu (libhpdf-dev) does not.
pkg_check_modules(XLSXWRITER REQUIRED IMPORTED_TARGET xlsxwriter)
find_library(HPDF_LIBRARY NAMES hpdf REQUIRED)
find_path(HPDF_INCLUDE_DIR hpdf.h REQUIRED)
add_library(ana_hpdf INTERFACE IMPORTED)
target_link_libraries(ana_hpdf INTERFACE ${HPDF_LIBRARY})
target_include_directories(ana_hpdf INTERFACE ${HPDF_INCLUDE_DIR})
