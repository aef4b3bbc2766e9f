# Compiles every .proto the project uses with protoc-c into the library
# ana_pb (message code only). Output goes to the build tree, never the source.
set(ANA_PB_OUT ${CMAKE_BINARY_DIR}/generated/pb)
file(MAKE_DIRECTORY ${ANA_PB_OUT})

set(ANA_PROTO_INCLUDES
    -I${CMAKE_SOURCE_DIR}/proto -I${ANA_GOOGLEAPIS_PROTO_DIR} -I${ANA_GRPC_PROTO_DIR}
    -I${ANA_WKT_PROTO_DIR})

# The service's own contracts (relative to proto/).
file(GLOB ANA_API_PROTOS RELATIVE ${CMAKE_SOURCE_DIR}/proto
     CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/proto/analytics/v1/*.proto)
list(SORT ANA_API_PROTOS)

# Contracts served beside ours: health and reflection.
set(ANA_GRPC_SERVICE_PROTOS grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto
                            grpc/reflection/v1alpha/reflection.proto)

# Imported by the above, or used by the generator and the error model.
set(ANA_SUPPORT_PROTOS
    google/api/annotations.proto google/api/http.proto
    google/rpc/status.proto google/rpc/error_details.proto
    google/protobuf/any.proto google/protobuf/descriptor.proto google/protobuf/duration.proto
    google/protobuf/empty.proto google/protobuf/struct.proto google/protobuf/timestamp.proto
    google/protobuf/wrappers.proto google/protobuf/compiler/plugin.proto)

set(ANA_ALL_PROTOS ${ANA_API_PROTOS} ${ANA_GRPC_SERVICE_PROTOS} ${ANA_SUPPORT_PROTOS})

set(ANA_PB_SOURCES)
set(ANA_PB_PROTO_PATHS)
foreach(p ${ANA_ALL_PROTOS})
  string(REGEX REPLACE "\\.proto$" "" stem ${p})
  list(APPEND ANA_PB_SOURCES ${ANA_PB_OUT}/${stem}.pb-c.c)
  list(APPEND ANA_PB_HEADERS ${ANA_PB_OUT}/${stem}.pb-c.h)
endforeach()

# The full path of each file for dependency tracking.
set(ANA_PROTO_DEPENDS)
foreach(p ${ANA_API_PROTOS})
  list(APPEND ANA_PROTO_DEPENDS ${CMAKE_SOURCE_DIR}/proto/${p})
endforeach()

add_custom_command(
  OUTPUT ${ANA_PB_SOURCES} ${ANA_PB_HEADERS}
  COMMAND ${PROTOC_C} ${ANA_PROTO_INCLUDES} --c_out=${ANA_PB_OUT} ${ANA_ALL_PROTOS}
  DEPENDS ${ANA_PROTO_DEPENDS}
  COMMENT "protoc-c: message code for ${CMAKE_PROJECT_NAME}"
  VERBATIM)

add_library(ana_pb STATIC ${ANA_PB_SOURCES})
target_include_directories(ana_pb PUBLIC ${ANA_PB_OUT})
target_link_libraries(ana_pb PUBLIC PkgConfig::PROTOBUFC)
set_target_properties(ana_pb PROPERTIES POSITION_INDEPENDENT_CODE ON)
# Generated code is not ours to fix.
target_compile_options(ana_pb PRIVATE -w)

# ana_generate_api(): runs protoc-gen-ana over the API protos and defines the
# library ana_api with the method table, routes, client stubs and descriptor set.
# Called from gen/CMakeLists.txt once the plugin target exists.
function(ana_generate_api plugin_target)
  set(out ${CMAKE_BINARY_DIR}/generated/api)
  file(MAKE_DIRECTORY ${out})
  set(files ana_methods.h ana_methods.c ana_routes.h ana_routes.c ana_json_names.h
            ana_json_names.c ana_client_stubs.h ana_client_stubs.c ana_descriptor_set.c
            ana_openapi.h ana_openapi.c)
  list(TRANSFORM files PREPEND ${out}/ OUTPUT_VARIABLE outputs)
  add_custom_command(
    OUTPUT ${outputs}
    # The generator is a short-lived tool that frees nothing on purpose.
    COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=0
            ${PROTOC} ${ANA_PROTO_INCLUDES} --plugin=protoc-gen-ana=$<TARGET_FILE:${plugin_target}>
            --ana_out=${out} ${ANA_API_PROTOS} ${ANA_GRPC_SERVICE_PROTOS}
    DEPENDS ${plugin_target} ${ANA_PROTO_DEPENDS}
    COMMENT "protoc-gen-ana: method table, routes, client stubs, descriptor set"
    VERBATIM)
  set(sources ${outputs})
  # Client stubs need the client runtime; the client library compiles them.
  list(FILTER sources INCLUDE REGEX "\\.c$")
  list(FILTER sources EXCLUDE REGEX "ana_client_stubs\\.c$")
  add_library(ana_api STATIC ${sources})
  target_include_directories(ana_api PUBLIC ${out})
  target_link_libraries(ana_api PUBLIC ana_pb ana_common)
  set_target_properties(ana_api PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
