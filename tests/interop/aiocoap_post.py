"""One CoAP POST over DTLS from aiocoap on tinydtls (DTLSSocket), as a
Contiki-NG or RIOT device would send it: PSK, TLS_PSK_WITH_AES_128_CCM_8
only (the one suite tinydtls has for PSK).

usage: aiocoap_post.py URI IDENTITY KEY_HEX PAYLOAD
Prints the response code (e.g. "2.04 Changed") or "NO ANSWER: why".
"""
import asyncio
import sys
from urllib.parse import urlsplit

import aiocoap
from aiocoap import Context, Message, POST


async def main(uri, identity, key_hex, payload):
    parts = urlsplit(uri)
    credentials = {
        f"coaps://{parts.netloc}/*": {
            "dtls": {
                "psk": {"hex": key_hex},
                "client-identity": {"ascii": identity},
            }
        }
    }
    context = await Context.create_client_context(transports=["tinydtls"])
    context.client_credentials.load_from_dict(credentials)
    try:
        request = Message(code=POST, uri=uri, payload=payload.encode())
        response = await asyncio.wait_for(context.request(request).response, 20)
        print(response.code)
    except Exception as e:  # the test reads what went wrong
        print(f"NO ANSWER: {type(e).__name__}: {e}")
    finally:
        await context.shutdown()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
