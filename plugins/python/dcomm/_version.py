"""The package's version: the library it loads must be the same (checked at
import); CMakeLists.txt checks it against its own and include/dcomm.h's."""
__version__ = "0.1.0"
