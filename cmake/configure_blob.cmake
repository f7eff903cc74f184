# Writes the assembly that embeds the box init binary, with its path and content hash filled in.
file(SHA256 ${INIT_PATH} INIT_HASH)
configure_file(${IN} ${OUT} @ONLY)
