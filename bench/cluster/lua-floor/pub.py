# Redis CPU per publish op of the real store.lua (crates/backplane/src/store.lua):
# rooms of 2 across two nodes, N ops per script call.
#   redis-server --port 7392 --save "" --appendonly no &; python3 pub.py 7392 store.lua 86
import socket, sys, time, threading
from resp import enc, R, redis_cpu
port=int(sys.argv[1]); src=open(sys.argv[2]).read().replace('__MEMBER_ENTRY_BYTES__','64'); N=int(sys.argv[3])
cpu=redis_cpu(port)
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
