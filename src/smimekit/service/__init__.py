"""The CA's HTTP service: one ASGI application, served by granian.

::

    app.py           ServiceApp: the root ASGI application and its mount table; what every
                     request gets whatever it is for (Host and method checks, one escaped
                     access-log line, no traceback to the client)
    ca_endpoints.py  CAEndpoints: CRLs, OCSP (POST and GET) and the CA certificates, one
                     mountable sub-application; CAServer and ocsp_only_server() for tests
                     and the library
    runner.py        ServerLimits; serve() (forked workers, `smimekit ca serve`) and
                     EmbeddedServer (in process, on a thread of its own)

Later services (SCEP, ACME, a console) mount beside the CA endpoints in ``ServiceApp``'s
table. granian is imported by ``runner`` only.
"""
