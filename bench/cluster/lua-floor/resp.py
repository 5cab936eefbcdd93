# A bare RESP client and the CPU of a redis-server, for the scripts here:
# no dependency beyond the standard library.
import socket, subprocess
def enc(args):
    out=[b'*%d\r\n'%len(args)]
    for a in args:
        if isinstance(a,str): a=a.encode()
        out.append(b'$%d\r\n%s\r\n'%(len(a),a))
    return b''.join(out)
class R:
    def __init__(s,port):
        s.s=socket.create_connection(('127.0.0.1',port)); s.f=s.s.makefile('rb')
    def cmd(s,*a):
        s.s.sendall(enc(a)); return s.read()
    def read(s):
        l=s.f.readline()
        t=l[:1]; v=l[1:-2]
        if t==b'+': return v
        if t==b'-': raise Exception(v)
        if t==b':': return int(v)
        if t==b'$':
            n=int(v)
            if n<0: return None
            d=s.f.read(n+2); return d[:-2]
        if t==b'*':
            n=int(v); return [s.read() for _ in range(n)]

def redis_cpu(port):
    """A function returning redis-server's CPU seconds (the one on `port`)."""
    pid = int(subprocess.check_output(['pgrep', '-f', 'redis-server 127.0.0.1:%d' % port]).split()[0])
    def cpu():
        f = open('/proc/%d/stat' % pid).read().split(')')[1].split()
        return (int(f[11]) + int(f[12])) / 100.0
    return cpu
