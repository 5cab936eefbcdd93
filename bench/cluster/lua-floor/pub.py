# Redis CPU per publish op of the real store.lua (crates/backplane/src/store.lua):
# rooms of 2 across two nodes, N ops per script call.
#   redis-server --port 7392 --save "" --appendonly no &; python3 pub.py 7392 store.lua 86
import socket, sys, time, subprocess, threading
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
        l=s.f.readline(); t=l[:1]; v=l[1:-2]
        if t==b'+': return v
        if t==b'-': raise Exception(v)
        if t==b':': return int(v)
        if t==b'$':
            n=int(v)
            if n<0: return None
            d=s.f.read(n+2); return d[:-2]
        if t==b'*':
            n=int(v); return [s.read() for _ in range(n)]
port=int(sys.argv[1]); src=open(sys.argv[2]).read().replace('__MEMBER_ENTRY_BYTES__','64'); N=int(sys.argv[3])
pid=int(subprocess.check_output(['pgrep','-f','redis-server 127.0.0.1:%d'%port]).split()[0])
def cpu():
    f=open('/proc/%d/stat'%pid).read().split(')')[1].split()
    return (int(f[11])+int(f[12]))/100.0
r=R(port); r.cmd('FLUSHALL')
sha=r.cmd('SCRIPT','LOAD',src).decode()
for node in ('n1','n2'):
    sub=socket.create_connection(('127.0.0.1',port)); sub.sendall(enc(['SUBSCRIBE','P:node:'+node]))
    threading.Thread(target=lambda s=sub: [s.recv(1<<20) for _ in iter(int,1)],daemon=True).start()
def call(node, cmds):
    args=['EVALSHA',sha,'0','P',node,'1024','1048576','10000']
    for c in cmds: args += [str(len(c))] + c
    return r.cmd(*args)
def atom(s): return '%d:%s'%(len(s),s)
for i in range(100):
    for node,side in (('n1','a'),('n2','b')):
        s='s%s%d'%(side,i)
        call(node,[['register',s,'tok','peer%s%d'%(side,i),'-','n','0','0','0','0','-']])
        call(node,[['join','1',s,'room%d'%i,'-','3','0','0','m','0']])
body='x'*280
ev=lambda i: atom('M')+atom('peera%d'%i)+atom(body)
time.sleep(0.2)
c0=cpu(); calls=300; seq={}
for b in range(calls):
    cmds=[]
    for k in range(N):
        i=(b*N+k)%100
        cmds.append(['publish','-','room%d'%i,'-','peera%d'%i,ev(i),'0','0'])
    call('n1',cmds)
time.sleep(0.2)
print(sys.argv[2], 'publish redis us/op %.2f'%((cpu()-c0)*1e6/(calls*N)))
